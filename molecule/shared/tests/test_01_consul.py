"""Consul: a running, hardened agent with a leader, the UI, DNS and Connect's CA."""


def test_consul_service_is_running_and_enabled(host):
    svc = host.service("consul")
    assert svc.is_running
    assert svc.is_enabled


def test_consul_runs_as_unprivileged_user(host):
    assert host.process.get(comm="consul", user="consul")  # the agent, not root


def test_leader_elected_on_the_server_port(mesh, model):
    leader = mesh.consul("/v1/status/leader")
    assert leader.rsplit(":", 1)[1] == str(model["settings"]["consul_ports"]["server"]), leader


def test_listens_on_http_https_dns_and_server_ports(host, mesh, model):
    """Plain HTTP on loopback only; HTTPS and DNS on every address; the server RPC port on the node's address."""
    ports = model["settings"]["consul_ports"]
    node = next(iter(model["nodes"].values()))["address"]
    for spec in (f"tcp://127.0.0.1:{ports['http']}", f"tcp://0.0.0.0:{ports['https']}", f"udp://0.0.0.0:{ports['dns']}",
                 f"tcp://{mesh.consul('/v1/status/leader')}"):
        assert host.socket(spec).is_listening, spec
    assert not host.socket(f"tcp://0.0.0.0:{ports['http']}").is_listening
    assert not host.socket(f"tcp://{node}:{ports['http']}").is_listening


def test_ui_is_served(host, model):
    out = host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {model['settings']['consul_http_addr']}/ui/")
    assert out == "200"


def test_connect_ca_has_a_root(mesh):
    roots = mesh.consul("/v1/connect/ca/roots")
    assert roots["ActiveRootID"]
    assert any(root["Active"] for root in roots["Roots"])


def test_config_and_registrations_pass_consul_validate(host):
    assert host.run("consul validate /etc/consul.d /etc/consul.d/services").rc == 0
