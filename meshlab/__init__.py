"""meshlab: the one model of the hello-servicemesh lab.

Every consumer derives the lab's facts from here and nowhere else:

* ``catalog``  - validation of the service catalog (``mesh_catalog``), placement rules;
* ``model``    - expansion into instances: ids, nodes, ports, addresses, unit names,
                 environment, argv, Consul registrations, sidecar argv, intentions;
* ``nomad``    - the values of the Nomad jobs (built from the same model functions);
* ``apps``     - which files of each app are installed, and the code revision that
                 restarts its instances when it changes;
* ``acl``      - the lab's ACL policies and tokens, and the names of their secrets;
* ``secrets``  - reading and writing the secrets kept on the controller;
* ``edge``     - the edge's plan and HAProxy configuration;
* ``metrics``  - Prometheus' plan, scrape jobs and expected targets;
* ``profile``  - the offline/full profile: the one probe and the one mapping to
                 scheduler and install method (Vagrant and Ansible both use it);
* ``bench``    - the benchmark plan (direct path, components to sample, URLs);
* ``labstate`` - the shape of the Vagrant lab's state file;
* ``__main__`` - ``python -m meshlab``: the commands playbooks and scripts run on the controller.

Ansible reaches it through the filter plugins in ``plugins/filter/mesh.py``;
bench/, scripts/ and the test kit (``testkit``, which imports this package, never
the reverse) import it. It is installed into the project's venv (``pip install -e .``,
done by ``make bootstrap``) so that all of them import the same code without path tricks.
"""

SEED_EXPRESSION = "1+1+2+3+4+5+6-1-2-3-4-5-6+9+8-4-5"
"""The 2018 seed's request: 16 upstream calls (8 additions, 8 subtractions)."""

SEED_RESULT = 9
