# Fleet steps for .ci/run (a bash snippet, not a script): insert after the line that installs
# tests/sdk/requirements.txt and before `cargo test --locked`. It uses .ci/run's apt_install and $venv.
# tests/fleet.rs starts a real redis-server; tests/deploy.rs validates deploy/k8s with
# kubernetes-validate from PyPI (Kubernetes' schemas are bundled in the wheel, no GitHub download).
command -v redis-server >/dev/null 2>&1 || apt_install redis-server
"$venv/bin/python" -m pip install --disable-pip-version-check -q -r deploy/requirements.txt
