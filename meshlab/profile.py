"""The lab's profile, decided in one place: the probe and the mapping to scheduler and install method.

    auto     full when HashiCorp's servers answer (or when Nomad already runs on every
             node: a full lab stays full), else offline
    full     current Consul from HashiCorp's apt repository, Nomad, the nomad scheduler
    offline  Consul 1.8.7 from Debian's archive, no Nomad, the systemd scheduler (CI)

The Vagrantfile runs ``python -m meshlab profile`` once, when a lab is created,
and writes the answer into the inventory it generates; playbooks/profile.yml
runs the same command when the inventory says ``auto``. The probe runs on the
controller (the machine that runs Ansible and Vagrant), whose network the nodes share.
"""

import urllib.error
import urllib.request

PROFILES = {
    "full": {"scheduler": "nomad", "consul_install_method": "hashicorp_apt", "consul_version": "",
             "summary": "HashiCorp's current Consul and Nomad, the nomad scheduler"},
    "offline": {"scheduler": "systemd", "consul_install_method": "debian", "consul_version": "1.8.7",
                "summary": "Consul 1.8.7 from Debian's archive, the systemd scheduler, no Nomad"},
}
CHOICES = ("auto",) + tuple(PROFILES)
PROBE_URLS = ("https://releases.hashicorp.com/", "https://apt.releases.hashicorp.com/gpg")
PROBE_TIMEOUT = 5


def probe(urls=PROBE_URLS, timeout=PROBE_TIMEOUT):
    """None when every URL answers (any HTTP status), else what failed first."""
    for url in urls:
        request = urllib.request.Request(url, method="HEAD")
        try:
            urllib.request.urlopen(request, timeout=timeout).close()  # noqa: S310 - fixed https URLs
        except urllib.error.HTTPError:
            continue  # the server answered: reachable
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return f"{url}: {type(reason).__name__}: {str(reason).splitlines()[0] if str(reason) else 'no answer'}"
    return None


def defaults(profile):
    """What a resolved profile sets: scheduler, consul_install_method, consul_version."""
    if profile not in PROFILES:
        raise ValueError(f"profile is {profile!r}: use one of {', '.join(PROFILES)}")
    return dict(PROFILES[profile])


def resolve(requested, problem=None, nomad_everywhere=False):
    """{profile, reason, scheduler, consul_install_method, consul_version} for the requested profile.

    `problem` is probe()'s answer (None: HashiCorp answered); `nomad_everywhere`
    that Nomad already answers on every node.
    """
    if requested not in CHOICES:
        raise ValueError(f"mesh_profile is {requested!r}: use auto, full or offline (MESH_PROFILE=... for Vagrant)")
    if requested != "auto":
        profile, reason = requested, f"mesh_profile={requested} forces it"
    elif nomad_everywhere:
        profile, reason = "full", "Nomad already runs on every node (the lab was provisioned with the full profile)"
    elif problem:
        profile, reason = "offline", f"HashiCorp cannot be reached ({problem})"
    else:
        profile, reason = "full", "HashiCorp's servers answer"
    return {"profile": profile, "reason": reason, **defaults(profile)}
