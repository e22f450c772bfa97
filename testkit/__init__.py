"""testkit: what the lab's test suites, scripts/lab and bench/ share, apart from the model it tests.

* ``lab``      - running the project's playbooks, the lab model as Ansible resolves it (and rebuilt for
                 another catalog), ``wait_until``, TLS and DNS probes, the Molecule inventory and secrets;
* ``load``     - bounded loads (fixed rate, fixed duration, every request's outcome recorded) and their summary;
* ``observe``  - Prometheus' API and the headless browser (dashboard, Consul UI, screenshots);
* ``fixtures`` - the pytest fixtures every Molecule scenario's tests share.

It imports ``meshlab`` (the model); ``meshlab`` never imports it, so what Ansible loads carries no test code.
"""
