"""The apps' code as it is installed on the nodes: which files, and the revision that restarts instances.

Every directory under apps/ that a catalog service names (``app:``) is installed
to ``<apps_dir>/<app>/`` on every workload node, minus what only development
needs (tests, caches, dev requirements, docs). It travels as one deterministic
tar (``tarball``), and the directory is replaced whole when the tar changes,
so files deleted from apps/ disappear from the nodes too. Its *revision* is a SHA-256 over
those files' paths and contents (node_modules/ stands in as package-lock.json, which pins it): it goes into each instance's environment
(MESH_APP_REVISION), so new code changes the systemd unit or the Nomad job and
the scheduler restarts exactly the instances of that app.
"""

import hashlib
import os

SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "apps")

# Directory and file names never installed on a node.
EXCLUDED_DIRS = {"tests", "test", "test-support", "__pycache__", ".pytest_cache", "venv", ".venv"}
EXCLUDED_FILES = {"requirements-dev.txt", "README.md", "pyproject.toml"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
# A Node.js app's installed dependencies: shipped, but its revision hashes the lockfile instead.
NODE_MODULES = "node_modules" + os.sep


def files(apps_src, app):
    """Paths (relative to the app's directory, sorted) of the files a node gets.

    A Node.js app's production dependencies (package-lock.json; `npm ci --omit=dev`, which
    `make bootstrap` runs) travel with it in node_modules/: the nodes need no npm.
    """
    root = os.path.join(apps_src, app)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"app '{app}': no directory {root}: every catalog `app` must be a directory under apps/")
    package = os.path.join(root, "package.json")
    if os.path.exists(package):
        import json

        with open(package, encoding="utf-8") as fh:
            needs = json.load(fh).get("dependencies") or {}
        missing = [d for d in needs if not os.path.isdir(os.path.join(root, "node_modules", d))]
        if missing:
            raise FileNotFoundError(f"app '{app}': node_modules lacks {', '.join(missing)}: run `make bootstrap` "
                                    f"(npm ci --omit=dev in {root})")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS and not d.startswith("."))
        for name in filenames:
            if name in EXCLUDED_FILES or name.endswith(EXCLUDED_SUFFIXES) or name.startswith("."):
                continue
            found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def directories(apps_src, app):
    """The directories (relative, sorted, parents first) that hold those files."""
    dirs = set()
    for path in files(apps_src, app):
        parent = os.path.dirname(path)
        while parent:
            dirs.add(parent)
            parent = os.path.dirname(parent)
    return sorted(dirs)


def revision(apps_src, app):
    """SHA-256 (first 16 hex digits) over the installed files' relative paths and contents, but for
    node_modules/: those are what package-lock.json (hashed) pins, so its ~700 files need not be read."""
    digest = hashlib.sha256()
    root = os.path.join(apps_src, app)
    for path in files(apps_src, app):
        if path.startswith(NODE_MODULES):
            continue
        digest.update(path.encode() + b"\0")
        with open(os.path.join(root, path), "rb") as fh:
            digest.update(fh.read())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def install_plan(model, apps_src=SOURCE):
    """What the nodes get for the model's apps: one entry per app, with its code directory, its
    revision, and (Python) its venv and requirements file."""
    plan = []
    for app, info in sorted(model["apps"].items()):
        app_files = files(apps_src, app)
        plan.append({
            "app": app,
            "dir": info["dir"],
            "revision": info["revision"],
            "venv": info["venv"] if info["language"] == "python" else "",
            "requirements": f"{info['dir']}/requirements.txt" if "requirements.txt" in app_files else "",
        })
    return plan


def tarball(apps_src, app, path):
    """Write the app's installed files as a deterministic tar (sorted, fixed mtime and owner) to `path`.

    The same code gives the same bytes, so copying it to a node changes nothing on a re-run,
    and one transfer replaces one per file.
    """
    import tarfile

    root = os.path.join(apps_src, app)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for rel in files(apps_src, app):
            info = tar.gettarinfo(os.path.join(root, rel), arcname=rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "root", "root", 0o644
            with open(os.path.join(root, rel), "rb") as fh:
                tar.addfile(info, fh)
    return path
