"""docker/ stays deployable without a Docker engine: static checks of the image, the Compose
file and the Kubernetes manifests (they parse, carry the required keys, hold no secrets, and
every hpo command they run exists with the options they pass)."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import click
import pytest
from ruamel.yaml import YAML

from hpo.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"
YAML_FILES = sorted(p for ext in ("*.yaml", "*.yml") for p in DOCKER.rglob(ext))
TEXT_FILES = sorted(p for p in DOCKER.rglob("*") if p.is_file())
PLACEHOLDER = "change-me"
# Compose interpolation variables of the deployment itself (not read by hpo).
DEPLOYMENT_VARS = {"HPO_STUDY", "HPO_SPEC", "HPO_WORKERS"}


def load_all(path: Path) -> list:
    return [doc for doc in YAML(typ="safe").load_all(path.read_text()) if doc is not None]


def compose() -> dict:
    (doc,) = load_all(DOCKER / "compose.yaml")
    return doc


def k8s_docs() -> list[dict]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in load_all(path)]


def jobs() -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == "Job"}


def container(job: dict) -> dict:
    (c,) = job["spec"]["template"]["spec"]["containers"]
    return c


def env(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


# ---- hpo command lines ------------------------------------------------------------------

def check_hpo_args(args: list[str]) -> None:
    """Raise AssertionError unless ``hpo ARGS`` names an existing command with its options."""
    command: click.Command = cli
    path = ["hpo"]
    args = list(args)
    while isinstance(command, click.Group):
        while args and args[0].startswith("-"):  # the group's own flags: --debug, --help, --version
            flag = args.pop(0)
            flags = {o for p in command.params for o in p.opts} | {"-h", "--help"}
            assert flag in flags, f"{' '.join(path)} has no option {flag}"
            if flag in ("-h", "--help", "--version"):
                return
        assert args, f"{' '.join(path)} needs a subcommand"
        name = args.pop(0)
        assert name in command.commands, f"{' '.join(path)} has no command {name!r} (has {sorted(command.commands)})"
        command = command.commands[name]
        path.append(name)
    where = " ".join(path)
    options = {opt: p for p in command.params if isinstance(p, click.Option) for opt in p.opts + p.secondary_opts}
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    positional = []
    while args:
        token = args.pop(0)
        if token.startswith("-") and token != "-":
            name, eq, value = token.partition("=")
            assert name in options, f"{where} has no option {name} (has {sorted(options)})"
            option = options[name]
            if not (option.is_flag or option.count):
                if not eq:
                    assert args, f"{where} {name} needs a value"
                    value = args.pop(0)
                if isinstance(option.type, click.Choice) and "$" not in value:
                    assert value in option.type.choices, f"{where} {name} {value!r} not in {option.type.choices}"
        else:
            positional.append(token)
    needed = sum(1 for a in arguments if a.required)
    allowed = sum(a.nargs if a.nargs > 0 else 10**6 for a in arguments)
    assert needed <= len(positional) <= allowed, f"{where} takes {needed}..{allowed} arguments, got {positional}"


def compose_hpo_commands() -> list[list[str]]:
    services = compose()["services"]
    return [[str(a) for a in s["command"]] for s in services.values() if "build" in s or s.get("image") == "hpo:local"]


def k8s_hpo_commands() -> list[list[str]]:
    out = []
    for job in jobs().values():
        c = container(job)
        assert c["command"] == ["hpo"], f"{job['metadata']['name']} should run hpo"
        out.append([str(a) for a in c["args"]])
    return out


def documented_hpo_commands() -> list[list[str]]:
    """`docker compose ... run --rm SERVICE ARGS` (entrypoint hpo) and `hpo ARGS` in comments."""
    out = []
    for path in TEXT_FILES:
        for line in path.read_text().splitlines():
            line = line.strip().lstrip("#").strip()
            if (match := re.match(r"docker compose .*\brun --rm \S+ (.+)$", line)) or (
                    match := re.match(r"hpo ((?:study|worker|dashboard|space|retrain|quickstart)\b.*)$", line)):
                out.append(shlex.split(match.group(1)))
    return out


def test_hpo_arg_checker_rejects_what_hpo_would():
    check_hpo_args(["dashboard", "--host", "0.0.0.0", "--port", "8080"])
    check_hpo_args(["--help"])
    check_hpo_args(["--debug", "study", "show", "x"])
    for bad in (["dashbord"], ["--verbose", "worker", "x"], ["dashboard", "--hots", "x"], ["study"], ["worker"],
                ["study", "create", "x.yaml", "--if-exists", "replace"], ["worker", "a", "b"]):
        with pytest.raises(AssertionError):
            check_hpo_args(bad)


@pytest.mark.parametrize("args", compose_hpo_commands() + k8s_hpo_commands() + documented_hpo_commands(),
                         ids=lambda a: " ".join(a)[:60])
def test_every_hpo_command_exists_with_its_options(args):
    check_hpo_args(args)


def test_the_deployment_runs_create_dashboard_and_workers():
    commands = [" ".join(a[:2]) for a in compose_hpo_commands() + k8s_hpo_commands()]
    assert "study create" in commands and any(c.startswith("worker") for c in commands)
    assert any(c.startswith("dashboard") for c in commands)
    assert len(documented_hpo_commands()) >= 2


def test_dockerfile_cmd_is_an_hpo_command():
    text = (DOCKER / "Dockerfile").read_text()
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, re.M)
    check_hpo_args(YAML(typ="safe").load(cmd))


# ---- YAML and the Dockerfile --------------------------------------------------------------

def test_deployment_files_exist():
    for name in ("Dockerfile", "Dockerfile.dockerignore", "compose.yaml", "hpo.env.example",
                 "k8s/secret.example.yaml", "k8s/worker-job.yaml", "k8s/study-create-job.yaml"):
        assert (DOCKER / name).is_file(), name


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DOCKER)))
def test_yaml_parses(path):
    docs = load_all(path)
    assert docs and all(isinstance(d, dict) for d in docs)


def test_dockerfile():
    text = (DOCKER / "Dockerfile").read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    joined = "\n".join(instructions)
    assert re.search(r"^COPY --from=ghcr\.io/astral-sh/uv:[\w.]+ /uv ", joined, re.M)
    lock_copy = next(i for i, line in enumerate(instructions) if line.startswith("COPY") and "uv.lock" in line)
    source_copy = next(i for i, line in enumerate(instructions) if line.startswith("COPY") and " hpo " in line + " ")
    first_sync = next(i for i, line in enumerate(instructions) if "uv sync" in line)
    assert lock_copy < first_sync < source_copy, "copy the lock and sync before copying the source"
    syncs = re.findall(r"uv sync [^\n]*", joined)
    # No dependency group in the image: neither the dev tools nor the replay benchmark's peers.
    assert syncs and all("--locked" in s and "--no-default-groups" in s and "--compile-bytecode" in s for s in syncs)
    users = re.findall(r"^USER (\S+)", joined, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["hpo"\]$', joined, re.M)
    assert re.search(r'^CMD \["--help"\]$', joined, re.M)
    assert "PYTHONUNBUFFERED=1" in joined
    assert "docker build -f docker/Dockerfile" in text and text.rstrip().count(" .") >= 1


def test_dockerignore_keeps_secrets_and_local_state_out():
    lines = [line.strip() for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "allow-list: exclude everything, then re-include what the image needs"
    for needed in ("pyproject.toml", "uv.lock", "README.md", "hpo/", "models/", "search_spaces/"):
        assert f"!{needed}" in rules
    assert "**/*.env" in rules


def dockerignored(path: str, rules: list[str]) -> bool:
    """Whether the build context leaves ``path`` out: the last rule matching the path or one of
    its parent directories decides (``!`` re-includes), as Docker reads an ignore file."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for rule in rules:
        pattern = rule.removeprefix("!").rstrip("/")
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            ignored = not rule.startswith("!")
    return ignored


def test_the_image_gets_the_package_with_its_model_zoo_and_the_users_example_folder():
    lines = [line.strip() for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    for kept in ("hpo/models/custom.py", "hpo/models/cnn.py", "hpo/cli/quickstart.py",
                 "search_spaces/digits_cnn.yaml", "models/example_net.py", "models/README.md"):
        assert (ROOT / kept).is_file() and not dockerignored(kept, rules), kept
    for left_out in ("docker/hpo.env", ".venv/bin/python", "hpo/__pycache__/cli.cpython-311.pyc",
                     "tests/worker/test_pool.py", "hpo-studies.journal"):
        assert dockerignored(left_out, rules), left_out
    text = (DOCKER / "Dockerfile").read_text()
    copies = re.findall(r"^COPY (\S+) \./(\S+)$", text, re.M)
    assert {("hpo", "hpo"), ("search_spaces", "search_spaces"), ("models", "models")} <= set(copies)
    # Installed from its wheel, as users get it: the source tree (and so the example models/
    # folder) is not on the image's sys.path, and quickstart reads the specs packed in the wheel.
    syncs = re.findall(r"uv sync [^\n]*", text)
    assert syncs and all("--no-editable" in s for s in syncs)


# ---- Compose ----------------------------------------------------------------------------------

def test_compose_services():
    doc = compose()
    services = doc["services"]
    assert {"postgres", "dashboard", "worker"} <= set(services)
    pg = services["postgres"]
    assert pg["image"].startswith("postgres:15")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert any(str(v).endswith(":/var/lib/postgresql/data") and str(v).split(":")[0] in doc["volumes"]
               for v in pg["volumes"])
    assert "ports" not in pg, "PostgreSQL stays on the Compose network"
    for name in ("dashboard", "worker", "create"):
        s = services[name]
        assert s["env_file"] == "hpo.env"
        assert s["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "artifacts:/artifacts" in s["volumes"], f"{name} mounts the artifact store at /artifacts"
    assert "artifacts" in doc["volumes"]
    assert services["postgres"]["env_file"] == "hpo.env"
    assert services["worker"]["depends_on"]["create"]["condition"] == "service_completed_successfully"
    assert services["create"]["command"][-2:] == ["--artifacts", "/artifacts"]


def test_compose_dashboard_is_published_on_loopback_only():
    dashboard = compose()["services"]["dashboard"]
    assert dashboard["command"][:1] == ["dashboard"]
    assert dashboard["ports"] and all(str(p).startswith("127.0.0.1:") for p in dashboard["ports"])
    assert "HPO_DASHBOARD_AUTH" in (DOCKER / "hpo.env.example").read_text()


def test_compose_workers_reserve_a_gpu_each():
    worker = compose()["services"]["worker"]
    assert worker["command"][:2] == ["worker", "${HPO_STUDY:-digits-cnn}"]
    assert worker["command"][worker["command"].index("--device") + 1] == "cuda"
    deploy = worker["deploy"]
    assert "replicas" in deploy
    assert deploy["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


# ---- Kubernetes -------------------------------------------------------------------------------

def test_k8s_worker_is_an_indexed_gpu_job():
    job = jobs()["hpo-worker"]
    spec = job["spec"]
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] >= 1 and spec["completions"] >= 1 and spec["backoffLimit"] >= 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure"
    c = container(job)
    assert c["args"][:2] == ["worker", "$(HPO_STUDY)"] and "HPO_STUDY" in env(c)
    assert c["args"][c["args"].index("--device") + 1] == "cuda"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    rank = env(c)["HPO_WORKER_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert rank == "metadata.annotations['batch.kubernetes.io/job-completion-index']"


@pytest.mark.parametrize("name", ["hpo-worker", "hpo-study-create"])
def test_k8s_jobs_take_the_storage_from_the_secret_and_share_artifacts(name):
    job = jobs()[name]
    c = container(job)
    ref = env(c)["HPO_STORAGE"]["valueFrom"]["secretKeyRef"]
    secrets = {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == "Secret"}
    assert ref["name"] in secrets and ref["key"] in secrets[ref["name"]]["stringData"]
    claims = {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == "PersistentVolumeClaim"}
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/artifacts")
    claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    assert claims[claim]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_k8s_study_create_records_the_shared_artifacts_path():
    args = container(jobs()["hpo-study-create"])["args"]
    assert args[:2] == ["study", "create"]
    assert args[args.index("--artifacts") + 1] == "/artifacts"


# ---- no secrets --------------------------------------------------------------------------------

def test_hpo_env_vars_are_ones_hpo_reads():
    source = "\n".join(p.read_text() for p in (ROOT / "hpo").rglob("*.py"))
    known = set(re.findall(r'"(HPO_[A-Z_]+)"', source)) | DEPLOYMENT_VARS
    for path in TEXT_FILES:
        used = set(re.findall(r"\b(HPO_[A-Z_]+)\b", path.read_text()))
        assert used <= known, f"{path.name}: hpo reads no {sorted(used - known)}"


@pytest.mark.parametrize("path", TEXT_FILES, ids=lambda p: str(p.relative_to(DOCKER)))
def test_no_literal_secrets(path):
    text = path.read_text()
    example = ".example." in path.name or path.name.endswith(".example")
    for _user, password in re.findall(r"postgres(?:ql)?(?:\+\w+)?://([^:/@\s]+):([^@\s]+)@", text):
        assert password in ("PASSWORD", "***") or password.startswith("${") or (
            example and password == PLACEHOLDER), f"{path.name}: a password in a storage URL: {password!r}"
    for key, value in re.findall(r"^\s*#?\s*(\w*(?:PASSWORD|AUTH|SECRET|TOKEN)\w*)\s*[:=]\s*(\S*)", text, re.M):
        value = value.strip("'\"")
        if example and key.isupper():
            assert value in (PLACEHOLDER, "") or value.endswith(f":{PLACEHOLDER}"), f"{path.name}: {key}={value}"
        else:
            assert not value or value.startswith(("${", "$(")), f"{path.name}: {key} has a literal value {value!r}"


def test_compose_holds_no_password_and_takes_secrets_from_the_env_file():
    services = compose()["services"]
    for name, s in services.items():
        environment = s.get("environment", {})
        if isinstance(environment, list):
            environment = dict(e.split("=", 1) for e in environment)
        for key in environment:
            assert not re.search("PASSWORD|AUTH|STORAGE|SECRET", key), f"{name}: {key} belongs in hpo.env"
    example = (DOCKER / "hpo.env.example").read_text()
    for key in ("POSTGRES_PASSWORD=change-me", "HPO_STORAGE=postgresql://hpo:change-me@postgres:5432/hpo",
                "HPO_DASHBOARD_AUTH="):
        assert key in example
    assert "hpo.env" in (DOCKER / ".gitignore").read_text().split()


def test_k8s_secret_example_holds_only_placeholders():
    (secret,) = [d for d in k8s_docs() if d["kind"] == "Secret"]
    for value in secret["stringData"].values():
        assert PLACEHOLDER in value
    assert not any(d["kind"] == "Secret" for p in K8S.glob("*.yaml") if ".example." not in p.name
                   for d in load_all(p)), "Secrets only as *.example.yaml"


# ---- Slurm ------------------------------------------------------------------------------

SBATCH = DOCKER / "slurm" / "worker.sbatch"


def sbatch_options() -> dict[str, str]:
    """The ``#SBATCH`` options (``--name=value``, a flag's value ""), as sbatch reads them:
    only in the comment block before the first command."""
    options = {}
    for line in SBATCH.read_text().splitlines()[1:]:
        if line and not line.startswith("#"):
            break
        if line.startswith("#SBATCH "):
            name, _, value = line.removeprefix("#SBATCH ").strip().partition("=")
            options[name] = value
    return options


def sbatch_hpo_command() -> list[str]:
    (array,) = re.findall(r"^cmd=\((.*)\)$", SBATCH.read_text(), re.M)
    words = shlex.split(array)
    assert words[0] == "hpo", words
    return words[1:]


def test_slurm_worker_is_an_array_job_with_one_gpu_per_task():
    options = sbatch_options()
    assert re.fullmatch(r"\d+-\d+(%\d+)?", options["--array"]), options
    assert options["--gres"] == "gpu:1"
    assert "%a" in options["--output"] and options["--open-mode"] == "append"  # one log per task, kept on requeue


def test_slurm_signals_the_batch_shell_before_the_time_limit_and_requeues():
    options = sbatch_options()
    match = re.fullmatch(r"B:TERM@(\d+)", options["--signal"])
    assert match and int(match.group(1)) >= 60, options["--signal"]  # time for a checkpoint and the hand-back
    assert "--requeue" in options and options["--requeue"] == ""


def test_slurm_worker_is_a_real_hpo_worker_command_on_the_gpu():
    args = sbatch_hpo_command()
    check_hpo_args(args)
    assert args[0] == "worker" and args[args.index("--device") + 1] == "cuda"


def test_slurm_script_takes_the_storage_from_a_private_file():
    text = SBATCH.read_text()
    assert not re.search(r"^\s*(export\s+)?HPO_STORAGE=", text, re.M)  # never set in the script
    assert "--storage" not in " ".join(sbatch_hpo_command())  # nor on a command line (ps shows it)
    assert 'source "$storage_env"' in text and "chmod 600" in text


@pytest.mark.subprocess
def test_slurm_script_is_valid_bash():
    import subprocess

    result = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.mark.subprocess
def test_slurm_script_forwards_the_time_limit_signal_to_the_worker_and_requeues(tmp_path):
    # What Slurm does 120 s before the limit (--signal=B:TERM): SIGTERM to the batch shell
    # only. Stand-ins for hpo and scontrol record what reaches them.
    import os
    import signal
    import subprocess
    import time

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "hpo").write_text(
        "#!/bin/bash\n"
        f'echo "$@" > {tmp_path}/args\n'
        f"trap 'echo TERM > {tmp_path}/got; exit 0' TERM\n"
        f"touch {tmp_path}/started\n"
        "while true; do sleep 0.1; done\n")
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$@" > {tmp_path}/scontrol\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    storage_env = tmp_path / "storage.env"
    storage_env.write_text("HPO_STORAGE='postgresql://hpo:PASSWORD@db.example:5432/hpo'\n")
    storage_env.chmod(0o600)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path), "STORAGE_ENV_FILE": str(storage_env),
           "HPO_STUDY": "digits-cnn", "SLURM_JOB_ID": "1002", "SLURM_ARRAY_JOB_ID": "1000",
           "SLURM_ARRAY_TASK_ID": "2"}
    batch = subprocess.Popen(["bash", str(SBATCH)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while not (tmp_path / "started").exists():
        assert batch.poll() is None and time.monotonic() < deadline, batch.communicate()[0]
        time.sleep(0.05)
    batch.send_signal(signal.SIGTERM)
    output, _ = batch.communicate(timeout=20)
    assert batch.returncode == 0, output
    assert (tmp_path / "got").read_text() == "TERM\n"
    assert (tmp_path / "args").read_text() == "worker digits-cnn --device cuda --quiet\n"
    assert (tmp_path / "scontrol").read_text() == "requeue 1000_2\n"


@pytest.mark.subprocess
def test_slurm_script_refuses_a_storage_file_others_can_read(tmp_path):
    import subprocess

    storage_env = tmp_path / "storage.env"
    storage_env.write_text("HPO_STORAGE='postgresql://hpo:PASSWORD@db.example:5432/hpo'\n")
    storage_env.chmod(0o644)
    result = subprocess.run(["bash", str(SBATCH)], env={"PATH": "/usr/bin:/bin", "STORAGE_ENV_FILE": str(storage_env),
                                                        "HPO_STUDY": "x"}, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr == f"error: {storage_env} is readable by others: chmod 600 {storage_env}\n"
