"""The documentation builds, links only to what exists, keeps our own behaviour inside the
repository, and every example a user would paste from it parses or runs as shown. The examples
that need a gateway or a broker run in tests/test_readme_tour.py and
tests/queues/test_readme_consumers.py."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import yaml
from markdown.extensions.toc import slugify

from gateway.config import load_config
from schemas.event import canonical_event_id

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
DOCUMENTS = [README, *PAGES]
# Where our own words live: none of it may send a reader outside the repository for our
# behaviour (the external contract file is not shipped).
OWN_TREES = ["README.md", "docs", "config", "gateway", "adapters", "schemas", "bench", "mkdocs.yml"]


def marked_block(path: Path, name: str) -> str:
    """The text between `<!-- <name>:start -->` and `<!-- <name>:end -->` in `path`."""
    text = path.read_text()
    assert f"<!-- {name}:start -->" in text, f"{path.name}: no block {name!r}"
    return text.split(f"<!-- {name}:start -->")[1].split(f"<!-- {name}:end -->")[0].strip()


def fenced_code(block: str, language: str) -> str:
    """The code of a block that is one fenced block of `language`."""
    assert block.startswith(f"```{language}\n"), f"not a {language} block: {block[:40]!r}"
    assert block.endswith("\n```"), "not one block"
    return block.removeprefix(f"```{language}\n").removesuffix("```")


def code_blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(), re.MULTILINE | re.DOTALL)


def headings(path: Path) -> set[str]:
    """The text of each Markdown heading of `path`, code blocks left out (their `#` lines are
    shell and Python comments)."""
    found = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"#{1,6} (.+)", line)):
            found.add(match.group(1).strip())
    return found


def anchors(path: Path) -> set[str]:
    """The ids MkDocs gives the headings of `path` (Python-Markdown's toc slugify)."""
    return {slugify(heading.replace("`", ""), "-") for heading in headings(path)}


def test_mkdocs_builds_strict_without_a_warning(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "site" / "operator-page.png").exists()


def test_mkdocs_checks_links_and_anchors_strictly() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["strict"] is True
    assert config["docs_dir"] == "docs"
    validation = config["validation"]
    assert validation["links"]["not_found"] == "warn"
    assert validation["anchors"] == "warn"


def test_a_broken_anchor_fails_the_build(tmp_path: Path) -> None:
    """The build above would pass with anchors unchecked: prove a wrong one fails it."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[gone](other.md#no-such-heading)\n")
    (docs / "other.md").write_text("# Other\n")
    config = (ROOT / "mkdocs.yml").read_text().split("\nnav:")[0]
    (tmp_path / "mkdocs.yml").write_text(config + "\nnav:\n  - index.md\n  - other.md\n")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "s")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "no-such-heading" in result.stdout + result.stderr


def test_the_nav_lists_every_page_once() -> None:
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def pages(entries: list[object]) -> list[str]:
        found: list[str] = []
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            found += pages(value) if isinstance(value, list) else [str(value)]
        return found

    listed = pages(nav)
    assert sorted(listed) == sorted(str(page.relative_to(DOCS)) for page in PAGES)
    assert len(listed) == len(set(listed))


def _own_files() -> list[Path]:
    files: list[Path] = []
    for name in OWN_TREES:
        path = ROOT / name
        files += [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return [p for p in files if "__pycache__" not in p.parts and p.suffix != ".png"]


def test_no_file_sends_the_reader_outside_the_repository_for_our_contract() -> None:
    offenders = []
    for path in _own_files():
        text = path.read_text(errors="replace")
        if "../shared" in text or re.search(r"\]\([^)]*CONTRACT\.md", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders


def test_docs_and_readme_never_mention_the_contract_file() -> None:
    for path in DOCUMENTS:
        assert "CONTRACT.md" not in path.read_text(), path


def test_readme_is_short_and_starts_with_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    first_block = code_blocks(README, "sh")[0]
    assert first_block.splitlines()[0].startswith("make run ")
    assert first_block.splitlines()[1].startswith("make test ")
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(
        r"^run: .*\n\t\$\(BIN\)/gateway serve --config config/gateway.toml$", makefile, re.M
    )
    assert re.search(r"^test: ", makefile, re.M)


def test_no_link_of_the_readme_or_docs_leaves_the_machine() -> None:
    """A reader of a clone stays in the clone: links go to its files, or to the gateway on
    this machine (127.0.0.1 / localhost); a library or a specification is named, not linked."""
    for path in DOCUMENTS:
        text = path.read_text()
        targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"<([a-z]+://[^>\s]+)>", text)
        for target in targets:
            scheme = re.match(r"([a-z]+):", target)
            if scheme is None:
                continue
            host = re.match(r"[a-z]+://([^/:]+)", target)
            assert host is not None, f"{path.name}: {target}"
            assert host.group(1) in ("127.0.0.1", "localhost"), (
                f"{path.name}: {target} leaves the machine"
            )


def test_every_relative_link_of_the_readme_and_docs_lands_on_a_file_and_heading() -> None:
    """MkDocs checks the pages; the README is outside its docs_dir, so this checks it (and, the
    same way, the pages' links again)."""
    for path in DOCUMENTS:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            file, _, anchor = target.partition("#")
            landing = (path.parent / file).resolve() if file else path
            assert landing.exists(), f"{path.name}: {target}"
            if landing.is_dir():
                continue
            assert landing.is_relative_to(ROOT), f"{path.name}: {target} leaves the repository"
            if anchor:
                assert anchor in anchors(landing), f"{path.name}: {target}: no such heading"


def _env_for(text: str) -> dict[str, str]:
    """A value for every ${NAME} of a config: a valid subscriber secret, which any other
    secret or token accepts too."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    return dict.fromkeys(re.findall(r"\$\{(\w+)\}", text), secret)


def test_every_toml_snippet_parses_and_every_whole_config_loads(tmp_path: Path) -> None:
    snippets = [(path, code) for path in DOCUMENTS for code in code_blocks(path, "toml")]
    assert len(snippets) >= 3
    whole = 0
    for number, (_path, code) in enumerate(snippets):
        document = tomllib.loads(code)
        if "sources" not in document:
            continue  # a fragment: the tour test loads the README's with the file it extends
        config_path = tmp_path / f"{number}.toml"
        config_path.write_text(code)
        load_config(config_path, _env_for(code))
        whole += 1
    assert whole >= 2  # the configuration page's whole file, the described provider


def test_every_json_snippet_parses_and_the_event_example_is_schema_valid() -> None:
    for path in DOCUMENTS:
        for code in code_blocks(path, "json"):
            json.loads(code)
    event = json.loads(
        fenced_code(marked_block(DOCS / "reference" / "event.md", "event-example"), "json")
    )
    schema = json.loads((ROOT / "schemas" / "canonical-event.schema.json").read_text())
    jsonschema.validate(event, schema)


def test_the_event_id_one_liner_gives_the_documented_id() -> None:
    page = DOCS / "reference" / "event.md"
    code = fenced_code(marked_block(page, "event-id"), "sh")
    result = subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == canonical_event_id("finfusion", "evt_123456789")
    assert f"`{result.stdout.strip()}`" in page.read_text()


def _run_shell(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_the_normalize_example_prints_the_canonical_event() -> None:
    code = fenced_code(marked_block(DOCS / "reference" / "event.md", "normalize-example"), "sh")
    result = _run_shell(code)
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout)
    assert event["type"] == "account.balance_updated"
    assert event["data"]["balance"] == {"value": "500", "currency": "NGN"}


def test_the_production_check_config_command_passes() -> None:
    page = DOCS / "reference" / "configuration.md"
    result = _run_shell(fenced_code(marked_block(page, "check-production"), "sh"))
    if Path("/var/log/finrelay").is_dir():
        assert result.returncode == 0, result.stdout + result.stderr
        return
    # The one problem the page says a machine without the file subscriber's directory gets.
    (problem,) = result.stderr.strip().splitlines()
    assert result.returncode == 1
    assert "subscribers.audit-log.path: the directory '/var/log/finrelay' does not exist" in problem
    assert "subscribers.audit-log.path: the directory\n'/var/log/finrelay' does not exist" in (
        page.read_text()
    )


def test_the_two_node_commands_check_the_file_they_name() -> None:
    """The commands of "Running two nodes": the file exists and checks with the variables set;
    `serve` and `migrate` are only parsed (they need a PostgreSQL: tests/nodes/ runs them)."""
    code = fenced_code(marked_block(DOCS / "reference" / "nodes.md", "two-nodes"), "sh")
    lines = [line.split("#")[0].strip() for line in code.splitlines()]
    exports = [
        name.split("=")[0]
        for line in lines
        if line.startswith("export ")
        for name in line.split()[1:]
    ]
    checks = [line for line in lines if line.startswith("gateway check-config ")]
    assert checks
    assert all(
        line.startswith("gateway ") for line in lines if line and not line.startswith("export ")
    )
    env = dict.fromkeys(exports, "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode())
    env["PGPASSWORD"] = secrets.token_hex(16)  # it goes into a URL: no "/" or "+"
    for line in checks:
        result = _run_shell(f"{sys.executable} -m gateway {line.removeprefix('gateway ')}", env)
        assert result.returncode == 0, result.stdout + result.stderr
    for line in lines:
        if line.startswith("gateway serve ") or line.startswith("gateway migrate "):
            assert (ROOT / line.split("--config ")[1].split()[0]).exists(), line


def _topic_matches(pattern: str, key: str) -> bool:
    """RabbitMQ's topic match: `*` is one word, `#` zero or more."""
    regex = r"\.".join(
        {"*": r"[^.]+", "#": r".*"}.get(word, re.escape(word)) for word in pattern.split(".")
    )
    return re.fullmatch(regex.replace(r"\..*", r"(\..*)?"), key) is not None


def test_the_broker_set_up_matches_the_example_config_and_the_consumers() -> None:
    """The operator's commands create what config/examples/queues.toml publishes to and the
    consumers read: the NATS stream captures the subject, the RabbitMQ bindings route a payment
    and a transfer to the consumers' queue."""
    page = DOCS / "reference" / "queues.md"
    commands = fenced_code(marked_block(page, "broker-setup"), "sh")
    example = tomllib.loads((ROOT / "config" / "examples" / "queues.toml").read_text())
    risk, accounting = example["subscribers"]["risk"], example["subscribers"]["accounting"]

    stream_subjects = re.search(r"nats stream add \S+ --subjects '([^']+)'", commands)
    assert stream_subjects
    subject = risk["subject"].replace("{type}", "payment.succeeded")
    assert _topic_matches(stream_subjects.group(1).replace(">", "#"), subject)
    assert f'"{stream_subjects.group(1)}"' in marked_block(page, "nats-consumer")

    assert f"declare exchange name={accounting['exchange']} type=topic" in commands
    bindings = re.findall(
        rf"declare binding source={accounting['exchange']} destination=(\S+) routing_key='([^']+)'",
        commands,
    )
    assert bindings
    for canonical in ("payment.succeeded", "transfer.failed"):
        key = (
            accounting["routing_key"].replace("{source}", "finfusion").replace("{type}", canonical)
        )
        assert any(_topic_matches(pattern, key) for _, pattern in bindings), key
    queues = {queue for queue, _ in bindings}
    assert all(f"declare queue name={queue} durable=true" in commands for queue in queues)
    assert all(f'get_queue("{queue}")' in marked_block(page, "amqp-consumer") for queue in queues)

    ledger = example["subscribers"]["ledger-stream"]
    assert f'"{ledger["stream"]}"' in marked_block(page, "redis-consumer")


def test_the_benchmark_commands_name_scripts_and_options_that_exist() -> None:
    code = fenced_code(marked_block(DOCS / "benchmarks.md", "bench-commands"), "sh")
    makefile = (ROOT / "Makefile").read_text()
    for line in code.splitlines():
        command = line.split("#")[0].split()
        if command[:2] == ["make", "bench"]:
            assert re.search(r"^bench: ", makefile, re.M)
            continue
        assert command[0] == ".venv/bin/python", line
        script = (ROOT / command[1]).read_text()
        for option in (word for word in command[2:] if word.startswith("--")):
            assert f'"{option}"' in script, f"{command[1]} has no {option}"
