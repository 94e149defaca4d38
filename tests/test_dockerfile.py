"""
The Dockerfile cannot be built here (no Docker engine): this checks its
assumptions instead, against the code, the sample configuration and
docker/entrypoint.sh: paths, user, volumes, ports, HEALTHCHECK, and what
.dockerignore keeps out of the image.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import pwd
import shlex
import stat
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from mailserver import install
from mailserver.config.endpoints import parse_endpoint
from mailserver.config.parameters import LISTENERS, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def instructions(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, continuation lines joined."""
    with open(path, encoding="utf-8") as handle:
        text = re.sub(r"\\\n", " ", handle.read())
    result: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            result = []  # only the last stage is the image
        result.append((word.upper(), rest.strip()))
    return result


def arguments(text: str) -> list[str]:
    return json.loads(text) if text.startswith("[") else shlex.split(text)


class DockerfileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.steps = instructions(os.path.join(REPO, "Dockerfile"))
        self.sample, _ = load_config(os.path.join(REPO, "etc", "mailserver.cf"))
        with open(os.path.join(REPO, "docker", "entrypoint.sh"), encoding="utf-8") as handle:
            self.entrypoint = handle.read()

    def all(self, name: str) -> list[str]:
        return [rest for word, rest in self.steps if word == name]

    def one(self, name: str) -> str:
        [rest] = self.all(name)
        return rest

    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for rest in self.all("ENV") for item in shlex.split(rest))

    def test_config_path_env_cmd_and_volume_agree(self) -> None:
        cmd = arguments(self.one("CMD"))
        config = cmd[cmd.index("--config") + 1]
        self.assertEqual(self.env()["MAILSERVER_CONFIG"], config)
        volumes = arguments(self.one("VOLUME"))
        self.assertIn(os.path.dirname(config), volumes)
        self.assertEqual(os.path.dirname(config), install.SAMPLE_DIRECTORY)
        self.assertEqual(os.path.dirname(self.sample.passwd_file), install.SAMPLE_DIRECTORY)

    def test_data_directory_is_a_volume_owned_by_the_user(self) -> None:
        volumes = arguments(self.one("VOLUME"))
        self.assertIn(self.sample.data_directory, volumes)
        self.assertIn(f'DATA_DIR="${{MAILSERVER_DATA:-{self.sample.data_directory}}}"\n', self.entrypoint)
        self.assertIn(f"-o mailserver -g mailserver -m 0750 {self.sample.data_directory}", " ".join(self.all("RUN")))

    def test_exposed_ports_are_the_sample_listeners(self) -> None:
        ports = set()
        for name in LISTENERS:
            for description in getattr(self.sample, name):
                ports.add(parse_endpoint(description).arguments.get("port") or description.split(":")[1])
        self.assertEqual(set(self.one("EXPOSE").split()), ports)

    def test_runs_as_an_unprivileged_user_after_binding(self) -> None:
        cmd = arguments(self.one("CMD"))
        self.assertEqual(cmd[:2], ["twistd", "-n"])
        self.assertIn("--uid=mailserver", cmd)
        self.assertIn("--gid=mailserver", cmd)
        self.assertEqual(cmd[cmd.index("--gid=mailserver") + 1], "mailserver")  # twistd options, then the plugin
        runs = " ".join(self.all("RUN"))
        self.assertIn("useradd --system --gid mailserver", runs)
        self.assertIn('RUN_AS="${MAILSERVER_USER:-mailserver}"\n', self.entrypoint)
        self.assertEqual(self.all("USER"), [])  # root until twistd has bound the ports

    def test_entrypoint_installs_the_samples_into_an_empty_volume(self) -> None:
        entry = arguments(self.one("ENTRYPOINT"))
        copies = [arguments(c) for c in self.all("COPY")]
        self.assertIn(["docker/entrypoint.sh", entry[0]], copies)
        mode = os.stat(os.path.join(REPO, "docker", "entrypoint.sh")).st_mode
        self.assertTrue(mode & stat.S_IXUSR)
        self.assertIn('mailserver init-config "$CONFIG_DIR"', self.entrypoint)
        self.assertIn('exec "$@"', self.entrypoint)
        [samples] = [c for c in copies if c[-1].rstrip("/") == install.INSTALLED_SAMPLES]
        self.assertEqual(samples[:-1], [f"etc/{name}" for name in install.SAMPLE_FILES])

    def test_healthcheck_asks_mailserver_status(self) -> None:
        check = self.one("HEALTHCHECK")
        self.assertIn("--interval=", check)
        self.assertEqual(arguments(check[check.index("CMD") + 3 :].strip()), ["mailserver", "status"])

    def test_no_source_tree_in_the_image(self) -> None:
        self.assertEqual([c for c in self.all("COPY") if arguments(c)[0] == "."], [])


class DockerignoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        with open(os.path.join(REPO, ".dockerignore"), encoding="utf-8") as handle:
            self.patterns = [line.strip() for line in handle if line.strip() and not line.startswith("#")]

    def ignored(self, path: str) -> bool:
        for pattern in self.patterns:
            bare = pattern[3:] if pattern.startswith("**/") else pattern
            parts = path.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            tails = ["/".join(parts[i:]) for i in range(len(parts))]
            if any(fnmatch.fnmatch(p, pattern) for p in prefixes):
                return True
            if pattern.startswith("**/") and any(fnmatch.fnmatch(t.split("/")[0], bare) for t in tails):
                return True
        return False

    def test_regression_quick_start_state_stays_out_of_the_image(self) -> None:
        """Building from a checkout where the quick start ran put passwd hashes and the TLS key into the image."""
        for path in ("mailserver-data/passwd", "mailserver-data/tls/selfsigned-key.pem", "etc/passwd",
                     "mailserver-data/mail/localhost/alice/new/1", ".git/config", "server.key"):
            self.assertTrue(self.ignored(path), path)

    def test_what_the_image_needs_is_sent(self) -> None:
        for path in ("setup.py", "README.rst", "mailserver/service.py", "twisted/plugins/mailserver_plugin.py",
                     "docker/entrypoint.sh", *(f"etc/{name}" for name in install.SAMPLE_FILES)):
            self.assertFalse(self.ignored(path), path)


class EntrypointTests(SynchronousTestCase):
    """docker/entrypoint.sh run for real (as root, with nobody standing in for the image's user)."""

    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("the entry point prepares volumes as root")
        try:
            self.nobody = pwd.getpwnam("nobody")
        except KeyError:
            raise SkipTest("no user nobody") from None
        base = os.path.abspath(self.mktemp())
        self.etc = os.path.join(base, "etc")
        self.data = os.path.join(base, "data")
        os.makedirs(self.etc)  # an empty bind mount
        bin_directory = os.path.join(base, "bin")
        os.makedirs(bin_directory)
        shim = os.path.join(bin_directory, "mailserver")
        with open(shim, "w") as handle:
            handle.write(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {REPO!r})\n"
                         "from mailserver.cli.main import main\nsys.exit(main(sys.argv[1:]))\n")
        os.chmod(shim, 0o755)
        self.env = dict(os.environ, PATH=bin_directory + os.pathsep + os.environ["PATH"],
                        MAILSERVER_CONFIG=os.path.join(self.etc, "mailserver.cf"),
                        MAILSERVER_DATA=self.data, MAILSERVER_USER="nobody")

    def run_entrypoint(self) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", os.path.join(REPO, "docker", "entrypoint.sh"), "echo", "started"],
                              env=self.env, capture_output=True, text=True, timeout=120)

    def test_first_start_fills_an_empty_volume_then_runs_the_command(self) -> None:
        result = self.run_entrypoint()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(result.stdout.endswith("started\n"), result.stdout)
        self.assertTrue(os.path.exists(os.path.join(self.etc, "aliases.db")))
        config, _ = load_config(os.path.join(self.etc, "mailserver.cf"))
        self.assertEqual(config.passwd_file, os.path.join(self.etc, "passwd"))
        passwd = os.stat(config.passwd_file)
        self.assertEqual((passwd.st_uid, stat.S_IMODE(passwd.st_mode)), (self.nobody.pw_uid, 0o600))
        self.assertEqual(os.stat(self.data).st_uid, self.nobody.pw_uid)

    def test_second_start_changes_no_configuration(self) -> None:
        self.assertEqual(self.run_entrypoint().returncode, 0)
        main_cf = os.path.join(self.etc, "mailserver.cf")
        with open(main_cf, "a") as handle:
            handle.write("myhostname = mine.example\n")
        result = self.run_entrypoint()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("installed", result.stdout)
        with open(main_cf) as handle:
            self.assertTrue(handle.read().endswith("myhostname = mine.example\n"))
