"""Lookup `mesh_secret`: a secret of the lab, generated once on the controller and re-read ever after.

    lookup('mesh_secret', 'consul/management', dir=mesh_secrets_dir)              # a UUID (token)
    lookup('mesh_secret', 'consul/gossip', kind='gossip', dir=mesh_secrets_dir)   # base64, 32 bytes

Files are 0600 in a 0700 directory (meshlab/secrets.py). Tasks that use the value set no_log.
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from meshlab import secrets

DOCUMENTATION = r"""
name: mesh_secret
short_description: A secret of the lab, generated once on the controller and kept there
description:
  - Returns the secret stored in I(dir)/<name>, creating it (mode 0600) on first use.
options:
  _terms:
    description: Secret names, such as consul/management.
    required: true
  dir:
    description: The lab's secrets directory (mesh_secrets_dir).
    type: str
    required: true
  kind:
    description: token (a UUID) or gossip (a base64 32-byte key).
    type: str
    default: token
"""


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        try:
            return [secrets.ensure(self.get_option("dir"), term, self.get_option("kind")) for term in terms]
        except (OSError, ValueError) as exc:
            raise AnsibleLookupError(f"mesh_secret: {exc}") from exc
