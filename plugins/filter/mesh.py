"""Ansible's door to the lab model (meshlab/, installed into the project's venv).

Every filter here only forwards to meshlab, so that playbooks, roles, tests,
bench/ and scripts/ derive each fact from the same code.
"""

from ansible.errors import AnsibleFilterError

from meshlab import acl, apps, bench, canary, catalog, edge, metrics, model, nomad, profile, rollout, secrets, tracing


def mesh_lab_model(mesh_catalog, node_names, node_addresses, settings):
    """meshlab.model.build: the catalog expanded and placed on the workload nodes."""
    nodes = [{"name": n, "address": a} for n, a in zip(node_names, node_addresses)]
    return model.build(mesh_catalog, nodes, settings)


def mesh_catalog_errors(mesh_catalog, scheduler="systemd", reserved_ports=None, nodes=None, groups=None, scale=None):
    return catalog.errors(mesh_catalog, scheduler, reserved_ports, nodes, groups, scale)


def mesh_on_node(lab_model, node):
    return model.on_node(lab_model, node)


def mesh_profile_defaults(name):
    return profile.defaults(name)


def mesh_secret_name(role, subject=None):
    """meshlab.acl.secret_name: the one naming of the lab's secrets ('agent' | mesh_secret_name(inventory_hostname))."""
    return acl.secret_name(role, subject)


def mesh_secret_value(name, secrets_dir, kind="token"):
    """The lab secret `name` (meshlab/secrets.py), made on first use on the controller: kind token (a UUID) or gossip
    (a base64 32-byte key). The one way roles and templates read a secret; for no_log tasks only."""
    try:
        return secrets.ensure(secrets_dir, name, kind)
    except (OSError, ValueError) as exc:
        raise AnsibleFilterError(f"mesh_secret_value: {exc}") from exc


def mesh_bench_plan(lab_model, options):
    return bench.plan(lab_model, options)


def mesh_bench_problems(lab_model, options):
    return bench.problems(lab_model, options)


def mesh_edge_plan(lab_model, options):
    """meshlab.edge.plan: what the edge serves (raises with the option to fix)."""
    return edge.plan(lab_model, options)


def mesh_edge_problems(lab_model, options):
    return edge.problems(lab_model, options)


def mesh_metrics_plan(lab_model, options):
    """meshlab.metrics.plan: what Prometheus scrapes and where it runs (raises with the option to fix)."""
    return metrics.plan(lab_model, options)


def mesh_metrics_problems(lab_model, options):
    return metrics.problems(lab_model, options)


def mesh_tracing_plan(lab_model, options):
    """meshlab.tracing.plan: how Zipkin and its sidecar run (raises with the option to fix)."""
    return tracing.plan(lab_model, options)


def mesh_tracing_problems(lab_model, options):
    return tracing.problems(lab_model, options)


def mesh_node_services(lab_model, node, address):
    """meshlab.model.node_services: the lab's own services on `node`, with the secret name of each one's token."""
    return model.node_services(lab_model, node, address)


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "mesh_lab_model": mesh_lab_model,
            "mesh_catalog_errors": mesh_catalog_errors,
            "mesh_scaled_catalog": catalog.scaled,
            "mesh_rollout_batches": rollout.batches,
            "mesh_on_node": mesh_on_node,
            "mesh_model_summary": model.summary,
            "mesh_apps_install_plan": apps.install_plan,
            "mesh_profile_defaults": mesh_profile_defaults,
            "mesh_bench_plan": mesh_bench_plan,
            "mesh_bench_problems": mesh_bench_problems,
            "mesh_edge_plan": mesh_edge_plan,
            "mesh_edge_problems": mesh_edge_problems,
            "mesh_edge_config": edge.config,
            "mesh_edge_split": edge.split,
            "mesh_canary_plan": canary.plan,
            "mesh_canary_query": canary.query,
            "mesh_canary_verdict": canary.verdict,
            "mesh_metrics_plan": mesh_metrics_plan,
            "mesh_metrics_problems": mesh_metrics_problems,
            "mesh_metrics_config": metrics.config,
            "mesh_metrics_targets": metrics.expected_targets,
            "mesh_node_services": mesh_node_services,
            "mesh_tracing_plan": mesh_tracing_plan,
            "mesh_tracing_problems": mesh_tracing_problems,
            "mesh_secret_name": mesh_secret_name,
            "mesh_acl_policies": acl.policies,
            "mesh_acl_tokens": acl.tokens,
            "mesh_acl_workload_tokens": acl.workload_tokens,
            "mesh_acl_token_files": acl.token_files,
            "mesh_secret_value": mesh_secret_value,
            "mesh_secrets_next": secrets.next_name,
            "mesh_nomad_job": nomad.job,
            "hcl_string": nomad.hcl_string,
        }
