"""Consul: a running, hardened agent with a leader, the UI, DNS and Connect's CA."""


def test_consul_service_is_running_and_enabled(host):
    svc = host.service("consul")
    assert svc.is_running
    assert svc.is_enabled


def test_consul_runs_as_unprivileged_user(host):
    assert host.process.get(comm="consul", user="consul")  # the agent, not root


def test_leader_elected(mesh):
    assert mesh.consul("/v1/status/leader").endswith(":8300")


def test_listens_on_http_dns_and_server_ports(host, mesh):
    # HTTP and DNS on every address (consul_client_addr); the server RPC port on the node's bind address.
    for spec in ("tcp://0.0.0.0:8500", "udp://0.0.0.0:8600", f"tcp://{mesh.consul('/v1/status/leader')}"):
        assert host.socket(spec).is_listening, spec


def test_ui_is_served(host):
    out = host.check_output("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8500/ui/")
    assert out == "200"


def test_connect_ca_has_a_root(mesh):
    roots = mesh.consul("/v1/connect/ca/roots")
    assert roots["ActiveRootID"]
    assert any(root["Active"] for root in roots["Roots"])


def test_config_passes_consul_validate(host):
    assert host.run("consul validate /etc/consul.d").rc == 0
