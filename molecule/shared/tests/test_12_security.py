"""Security: ACLs default deny, gossip encryption, TLS for RPC and HTTPS - each refusal with its control.

Calls go to the node's plain HTTP API on loopback (from the node itself) and to its HTTPS API on the
node's address (from the controller, another host), verified against the lab's CA from the
controller's secrets. The management token used by the controls comes from there too.
"""

import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

from conftest import instances_of, run_playbook, systemd_only
from meshlab import secrets
from testkit.lab import printed_secrets, recap, secrets_dir


@pytest.fixture(scope="module")
def lab_secrets(inventory):
    return secrets_dir(inventory)


@pytest.fixture(scope="module")
def https(model, lab_secrets):
    """(base URL, SSL context) of the node's HTTPS API, as another host reaches it."""
    node = next(iter(model["nodes"].values()))
    ctx = ssl.create_default_context(cafile=os.path.join(lab_secrets, "tls", "ca.pem"))
    return f"https://{node['address']}:{model['settings']['consul_ports']['https']}", ctx


def _remote(https, path, method="GET", token=None, data=None):
    base, ctx = https
    req = urllib.request.Request(base + path, method=method, data=json.dumps(data).encode() if data is not None else None,
                                 headers={"X-Consul-Token": token} if token else {})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


# (what, method, path, body): writes and reads that must need a token.
WRITES = [
    ("register a service", "PUT", "/v1/agent/service/register", {"Name": "intruder", "ID": "intruder-1", "Port": 1}),
    ("write an intention", "POST", "/v1/connect/intentions", {"SourceName": "intruder", "DestinationName": "add-svc",
                                                               "Action": "allow"}),
    ("write KV", "PUT", "/v1/kv/security-probe", "x"),
]
READS = [("read KV", "/v1/kv/security-probe"), ("read ACL tokens", "/v1/acl/tokens"), ("read the agent", "/v1/agent/self")]


def _undo(mesh, token):
    """Remove what the controls wrote."""
    mesh.status("/v1/agent/service/deregister/intruder-1", "PUT", token)
    mesh.status("/v1/kv/security-probe", "DELETE", token)
    for i in mesh.consul("/v1/connect/intentions") or []:
        if i["SourceName"] == "intruder" and i["Action"] == "allow":
            mesh.status(f"/v1/connect/intentions/{i['ID']}", "DELETE", token)


@pytest.mark.parametrize("what, method, path, body", WRITES, ids=[w[0] for w in WRITES])
def test_writes_without_a_token_are_refused_from_the_node_and_from_another_host(mesh, https, management_token,
                                                                                 what, method, path, body):
    try:
        local, remote = mesh.status(path, method, data=body), _remote(https, path, method, data=body)
        print(f"{what} without a token: {local} on the node, {remote} from the controller")
        assert (local, remote) == (403, 403)
        control = mesh.status(path, method, management_token, body)
        print(f"{what} with the management token: {control}")
        assert control == 200
    finally:
        _undo(mesh, management_token)


def test_token_less_reads_see_only_what_dns_needs(mesh, https, management_token, host, model):
    assert mesh.status("/v1/kv/security-probe", "PUT", management_token, "x") == 200
    try:
        for what, path in READS:
            local, remote = mesh.status(path), _remote(https, path)
            print(f"{what} without a token: {local} on the node, {remote} from the controller")
            assert (local, remote) == (403, 403), what
            assert mesh.status(path, token=management_token) == 200, f"control: {what} with the management token"
    finally:
        _undo(mesh, management_token)
    # Intentions: the list answers 200, filtered down to nothing; the management token sees them all.
    listed = json.loads(host.check_output(f"curl -sf {mesh.api}/v1/connect/intentions"))
    print(f"intentions without a token: {listed}; with the management token: {len(mesh.consul('/v1/connect/intentions'))}")
    assert listed == [] and len(mesh.consul("/v1/connect/intentions")) == len(model["intentions"]) + 1
    # What DNS needs stays readable without a token: the catalog and, through DNS, the services.
    assert mesh.status("/v1/catalog/services") == 200 and _remote(https, "/v1/catalog/services") == 200
    dns = model["settings"]["consul_ports"]["dns"]
    assert host.check_output(f"dig +short @127.0.0.1 -p {dns} add-svc.connect.consul SRV").strip()


def test_a_wrong_or_deleted_token_is_refused(mesh, management_token):
    path, body = "/v1/kv/security-probe", "x"
    assert mesh.status(path, "PUT", str(uuid.uuid4()), body) == 403  # a token Consul never issued
    secret = str(uuid.uuid4())
    policy = {"Name": f"probe-{secret[:8]}", "Rules": 'key "security-probe" { policy = "write" }'}
    assert mesh.status("/v1/acl/policy", "PUT", management_token, policy) == 200
    token = {"SecretID": secret, "Policies": [{"Name": policy["Name"]}], "Description": "security probe"}
    out = mesh.host.check_output(f"curl -sf -X PUT -H 'X-Consul-Token: {management_token}' --data-binary "
                                 f"'{json.dumps(token)}' {mesh.api}/v1/acl/token")
    accessor = json.loads(out)["AccessorID"]
    try:
        assert mesh.status(path, "PUT", secret, body) == 200  # control: the token works while it exists
        assert mesh.status(f"/v1/acl/token/{accessor}", "DELETE", management_token) == 200
        deadline = time.time() + 10
        while mesh.status(path, "PUT", secret, body) != 403:
            assert time.time() < deadline, "a deleted token still writes"
            time.sleep(0.5)
    finally:
        mesh.status(f"/v1/acl/token/{accessor}", "DELETE", management_token)
        policy_id = next((p["ID"] for p in mesh.consul("/v1/acl/policies") if p["Name"] == policy["Name"]), None)
        if policy_id:
            mesh.status(f"/v1/acl/policy/{policy_id}", "DELETE", management_token)
        _undo(mesh, management_token)


@systemd_only
def test_a_service_token_acts_only_for_its_service(mesh, model, lab_secrets, management_token):
    add = instances_of(model, "add-svc")[0]
    token = secrets.read(lab_secrets, f"consul/instance-{add['id']}")
    as_sub = {"Name": "sub-svc", "ID": "sub-svc-impostor", "Port": 1}
    as_add = {"Name": "add-svc", "ID": "add-svc-probe", "Port": 1}
    intention = {"SourceName": "add-svc", "DestinationName": "sub-svc", "Action": "allow"}
    try:
        refused = (mesh.status("/v1/agent/service/register", "PUT", token, as_sub),
                   mesh.status("/v1/connect/intentions", "POST", token, intention))
        control = mesh.status("/v1/agent/service/register", "PUT", token, as_add)
        print(f"{add['id']}'s token: register as sub-svc {refused[0]}, write an intention {refused[1]}, "
              f"register as add-svc {control}")
        assert refused == (403, 403) and control == 200
    finally:
        for sid in ("sub-svc-impostor", "add-svc-probe"):
            mesh.status(f"/v1/agent/service/deregister/{sid}", "PUT", management_token)


def test_https_is_verified_against_the_labs_ca_and_plain_http_stays_on_loopback(https, model):
    assert _remote(https, "/v1/status/leader") == 200  # control: another host, the lab's CA
    base, _ = https
    with pytest.raises(urllib.error.URLError):  # a client that trusts only the system's CAs refuses the server
        urllib.request.urlopen(base + "/v1/status/leader", context=ssl.create_default_context(), timeout=5)
    node = next(iter(model["nodes"].values()))["address"]
    with pytest.raises(urllib.error.URLError):  # no plain HTTP on the node's address
        urllib.request.urlopen(f"http://{node}:{model['settings']['consul_ports']['http']}/v1/status/leader", timeout=5)


def test_the_ui_asks_for_a_token(https, management_token):
    """The UI's page loads over HTTPS. Without a token it shows what DNS shows (services and nodes: Consul 1.8
    answers token-less HTTP with the same default token as DNS); KV and ACLs need a login (intentions: see above)."""
    base, ctx = https
    with urllib.request.urlopen(base + "/ui/", context=ctx, timeout=10) as resp:
        assert resp.status == 200
    for path in ("/v1/acl/tokens", "/v1/agent/self"):
        assert _remote(https, path) == 403, path
        assert _remote(https, path, token=management_token) in (200, 404), f"control: {path} with the management token"


# Inside the node: the server's RPC port with TLS (first byte 0x03, Consul's RPCTLS), without a client
# certificate and with the server's own (signed by the lab's CA: the control); and a plain RPC (0x00).
RPC_PROBE = r'''
import json, socket, ssl, sys
host, port, tls_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def attempt(cert):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(f"{tls_dir}/ca.pem")
    ctx.check_hostname = False
    if cert: ctx.load_cert_chain(f"{tls_dir}/server.pem", f"{tls_dir}/server-key.pem")
    raw = socket.create_connection((host, port), timeout=5)
    raw.sendall(b"\x03")
    try:
        with ctx.wrap_socket(raw) as tls:
            tls.sendall(b"\x00")  # after the handshake: an RPC byte, to make the server speak
            tls.settimeout(2)
            try:
                tls.recv(1)
            except socket.timeout:
                pass
        return "accepted"
    except ssl.SSLError as exc:
        return f"refused: {exc.reason}"
    except OSError as exc:
        return f"closed: {exc!r}"
plain = socket.create_connection((host, port), timeout=5)
plain.sendall(b"\x00\x81\xa1x\x00")
plain.settimeout(5)
try:
    got = plain.recv(100)
    plain_result = "closed" if got == b"" else f"answered {got[:20]!r}"
except OSError as exc:
    plain_result = f"closed: {exc!r}"
print(json.dumps({"no_cert": attempt(False), "lab_cert": attempt(True), "plain": plain_result}))
'''


def test_rpc_demands_tls_with_a_certificate_from_the_labs_ca(host, model):
    node = next(iter(model["nodes"].values()))["address"]
    run = host.run("python3 -c %s %s %s %s", RPC_PROBE, node, str(model["settings"]["consul_ports"]["server"]),
                   "/etc/consul.d/tls")
    assert run.rc == 0, run.stderr
    result = json.loads(run.stdout)
    print(f"server RPC: {result}")
    assert result["lab_cert"] == "accepted"
    assert result["no_cert"].startswith("refused") or result["no_cert"].startswith("closed")
    assert result["plain"].startswith("closed")


def test_an_agent_without_the_gossip_key_cannot_join(host, model, lab_secrets, management_token, tmp_path):
    """A throw-away agent in a container of the test's own on the scenario network: without the key it never
    becomes a member; with it (the control) it does."""
    node = next(iter(model["nodes"].values()))["address"]
    binary = tmp_path / "consul"
    subprocess.run(["podman", "cp", f"{next(iter(model['nodes']))}:/usr/bin/consul", str(binary)], check=True)
    key = secrets.read(lab_secrets, "consul/gossip")
    datacenter = json.loads(host.check_output(f"curl -sf -H 'X-Consul-Token: {management_token}' "
                                              f"{model['settings']['consul_http_addr']}/v1/agent/self"))["Config"]["Datacenter"]
    image = os.environ.get("MESH_IMAGE", "localhost/hello-servicemesh-base:bookworm")
    net = subprocess.run(["podman", "inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
                          next(iter(model["nodes"]))], capture_output=True, text=True, check=True).stdout.split()[0]
    results = {}
    for name, extra in (("gossip-probe-nokey", []), ("gossip-probe-key", ["-encrypt", key])):
        subprocess.run(["podman", "rm", "-f", name], capture_output=True)
        subprocess.run(["podman", "run", "-d", "--rm", "--name", name, "--network", net,
                        "-v", f"{binary}:/usr/local/bin/consul:ro", image,
                        "consul", "agent", "-node", name, "-datacenter", datacenter, "-data-dir", "/tmp/consul",
                        "-retry-join", node,
                        "-bind", '{{ GetPrivateInterfaces | attr "address" }}', *extra],
                       check=True, capture_output=True)
        try:
            deadline = time.time() + 15
            while time.time() < deadline:
                members = {m["Name"]: m["Status"] for m in json.loads(host.check_output(
                    f"curl -sf -H 'X-Consul-Token: {management_token}' {model['settings']['consul_http_addr']}/v1/agent/members"))}
                if members.get(name) == 1:
                    break
                time.sleep(1)
            results[name] = members.get(name)
        finally:
            subprocess.run(["podman", "rm", "-f", name], capture_output=True)
            host.run(f"curl -s -X PUT -H 'X-Consul-Token: {management_token}' "
                     f"{model['settings']['consul_http_addr']}/v1/agent/force-leave/{name}")
    print(f"member status (1 = alive) of the probes: {results}")
    assert results["gossip-probe-key"] == 1  # control: with the key it joins
    assert results["gossip-probe-nokey"] is None  # without it, never a member


def test_secret_files_belong_to_consul_or_root_and_are_not_world_readable(host, model):
    expected = {"/etc/consul.d/secrets.hcl": ("root", "consul", 0o640),
                "/etc/consul.d/tls/server-key.pem": ("consul", "consul", 0o600),
                "/etc/consul.d/tls/server.pem": ("consul", "consul", 0o640)}
    for inst in model["instances"]:
        expected[inst["token_file"]] = ("root", model["settings"]["user"], 0o640)
        expected[f"/etc/consul.d/services/{inst['id']}.json"] = ("root", "consul", 0o640)
    for path, (user, group, mode) in expected.items():
        f = host.file(path)
        assert (f.user, f.group, f.mode) == (user, group, mode), path


def test_a_second_run_changes_nothing_keeps_the_keys_and_prints_no_secret(host, inventory, lab_secrets):
    """workloads.yml again, verbose: 0 changed, the same keys and tokens on the node, no secret in the output.
    (site.yml's second run is the cluster scenario's, on three servers after every rotation: test_05.)"""
    before = host.check_output("sha256sum /etc/consul.d/secrets.hcl /etc/consul.d/tls/* /etc/mesh/tokens/*")
    rc, out = run_playbook(inventory, "playbooks/workloads.yml", raw=True, options=["-v"])
    assert rc == 0, out[-3000:]
    changed = {h: c["changed"] for h, c in recap(out).items()}
    print(f"playbooks/workloads.yml again: changed {changed}")
    assert set(changed.values()) == {0}
    assert host.check_output("sha256sum /etc/consul.d/secrets.hcl /etc/consul.d/tls/* /etc/mesh/tokens/*") == before
    names, printed = printed_secrets(lab_secrets, [out])
    print(f"{len(names)} secrets checked against the verbose output: {printed or 'none printed'}")
    assert {"consul/gossip", "consul/management", "consul/dns", "consul/intentions"} <= set(names)
    assert [n for n in names if n.startswith("consul/instance-")], "the instance tokens are checked too"
    assert printed == []
