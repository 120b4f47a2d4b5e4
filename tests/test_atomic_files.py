"""Files are written atomically, all through `samscale.fileio`: a writer that fails or is killed mid-write leaves the
old file whole, no module writes a file another way (a scan of the source), and two studies never share a work
directory's study.yaml."""
from __future__ import annotations

import ast
import contextlib
import copy
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import TINY
from samscale.cli import main
from samscale.errors import ClaimLost, ConfigError
from samscale.fileio import atomic_write, create_new, is_temp_name, write_bytes, write_text
from samscale.process import owner_tag
from samscale.spec.study import Study, load_study
from samscale.store import RunStore
from samscale.sweep.executors import SerialExecutor
from samscale.sweep.sweep import sweep
from samscale.workdir import store_path, study_path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "samscale"


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    write_text(target, '{"old": 1}\n')
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_write(target, "w") as handle:
            handle.write('{"new": ')
            raise RuntimeError("disk on fire")
    assert target.read_text() == '{"old": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    write_text(target, '{"new": 2}\n')
    assert target.read_text() == '{"new": 2}\n' and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_writer_killed_mid_write_leaves_the_old_file_whole(tmp_path):
    """SIGKILL after half of the new content is written and flushed: the target still holds the old content."""
    target = tmp_path / "study.yaml"
    write_text(target, "name: old\n" * 100)
    script = textwrap.dedent(f"""
        import os, signal
        from samscale.fileio import atomic_write
        with atomic_write({str(target)!r}, "w") as handle:
            handle.write("name: new\\n" * 50)
            handle.flush()
            os.fsync(handle.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGKILL
    assert target.read_text() == "name: old\n" * 100
    left = [p.name for p in tmp_path.iterdir() if p.name != "study.yaml"]
    assert len(left) == 1 and is_temp_name(left[0], "study.yaml")  # what a clean-up may remove, and nothing else
    assert not is_temp_name("study.yaml") and not is_temp_name(".study.yaml.tmp", "study.yaml")


def test_a_commit_guard_that_refuses_leaves_the_old_file_and_no_temporary(tmp_path):
    """`commit` (e.g. a run's claim fence) is held around the rename: one that raises on entry writes nothing."""
    target = tmp_path / "run.pt"
    write_bytes(target, b"old")
    seen = []

    @contextlib.contextmanager
    def refuse():
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        raise ClaimLost("taken over")
        yield

    with pytest.raises(ClaimLost, match="taken over"):
        with atomic_write(target, "wb", commit=refuse()) as handle:
            handle.write(b"new")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]
    (temporary,) = [name for name in seen[0] if name != "run.pt"]  # the guard ran with the new file written, unrenamed
    assert is_temp_name(temporary, "run.pt") and owner_tag() in temporary  # its writer is named in it

    @contextlib.contextmanager
    def allow():
        seen.append("held")
        yield

    with atomic_write(target, "wb", commit=allow()) as handle:
        handle.write(b"new")
    assert seen[-1] == "held" and target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]


def test_create_new_creates_once(tmp_path):
    target = tmp_path / "study.yaml"
    assert create_new(target, "name: a\n") is True
    assert create_new(target, "name: b\n") is False
    assert target.read_text() == "name: a\n" and [p.name for p in tmp_path.iterdir()] == ["study.yaml"]


# -- no write bypasses the helper -------------------------------------------------------------------------------

#: Calls that write files, by the called attribute's name (`x.write_text(...)`) or its dotted name (`torch.save`).
WRITING_METHODS = {"write_text", "write_bytes", "savefig", "to_csv", "to_json", "to_parquet", "to_pickle", "to_html",
                   "to_excel", "tofile", "extractall", "extract", "symlink_to", "hardlink_to", "touch"}
WRITING_FUNCTIONS = {"torch.save", "np.save", "np.savez", "np.savez_compressed", "np.savetxt", "numpy.save",
                     "json.dump", "yaml.dump", "yaml.safe_dump", "pickle.dump", "os.replace", "os.rename",
                     "os.link", "os.symlink", "os.open", "os.write", "shutil.move", "shutil.copy", "shutil.copy2",
                     "shutil.copyfile", "shutil.copytree", "tempfile.mkstemp", "tempfile.NamedTemporaryFile",
                     "urllib.request.urlretrieve"}
#: The atomic helpers: a writing call is allowed inside a lambda given to one of them or a `with` block of one.
HELPERS = {"atomic_write", "write_with"}
#: Deliberate exceptions, each with its reason.
ALLOWED = {
    ("report/study_report.py", "os.rename"): "swaps whole report folders (renames of directories, not file writes)",
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _opens_for_writing(call: ast.Call) -> bool:
    """open(..., "w"), Path.open("a"), gzip.open(..., "wb"), os.fdopen(fd, "w+"), ... (a mode with w, a, x or +)."""
    name = _dotted(call.func)
    if not (name == "open" or name.endswith(".open") or name.endswith("fdopen")):
        return False
    modes = [arg.value for arg in call.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
    modes += [kw.value.value for kw in call.keywords
              if kw.arg == "mode" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str)]
    return any(set(mode) <= set("rwxabt+:gz") and set(mode) & set("wax+") for mode in modes)


def bypassing_writes(source: str, where: str) -> list[str]:
    """`where:line: call` for every file-writing call in `source` that is not inside an atomic helper."""
    tree = ast.parse(source)
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node

    def inside_helper(node: ast.AST) -> bool:
        while node in parents:
            node, child = parents[node], node
            if isinstance(node, ast.Call) and _dotted(node.func).split(".")[-1] in HELPERS and child in node.args:
                return True
            if isinstance(node, ast.With) and any(isinstance(item.context_expr, ast.Call) and
                                                  _dotted(item.context_expr.func).split(".")[-1] in HELPERS
                                                  for item in node.items):
                return True
        return False

    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        method = name.rsplit(".", 1)[-1] if isinstance(node.func, ast.Attribute) else None
        yaml_to_stream = name in ("yaml.dump", "yaml.safe_dump") and (len(node.args) > 1 or any(
            kw.arg == "stream" for kw in node.keywords))
        writes = (_opens_for_writing(node) or method in WRITING_METHODS or yaml_to_stream
                  or (name in WRITING_FUNCTIONS and not name.startswith("yaml.")))
        if writes and not inside_helper(node) and (where, name) not in ALLOWED \
                and (where, method) not in ALLOWED:
            found.append(f"{where}:{node.lineno}: {name}")
    return found


def test_the_scan_finds_every_kind_of_direct_write():
    source = textwrap.dedent("""
        open(path, "w").write(text)
        open(path, mode="ab")
        path.open("w")
        gzip.open(path, "wt")
        os.fdopen(fd, "wb")
        path.write_text(text)
        path.write_bytes(data)
        figure.savefig(path)
        frame.to_csv(path)
        torch.save(state, path)
        np.savez(path, **arrays)
        json.dump(data, handle)
        yaml.safe_dump(data, handle)
        os.replace(tmp, path)
        tar.extractall(folder)
        tempfile.mkstemp(dir=folder)
    """)
    assert len(bypassing_writes(source, "x.py")) == source.strip().count("\n") + 1
    fine = textwrap.dedent("""
        open(path, "rb"); open(path); gzip.open(path, "rt"); yaml.safe_dump(data); json.dumps(data)
        write_with(path, lambda out: torch.save(state, out))
        write_with(png, lambda out: figure.savefig(out, format="png"))
        with atomic_write(path, "w") as handle:
            frame.to_csv(handle)
    """)
    assert bypassing_writes(fine, "x.py") == []


def test_every_file_samscale_writes_goes_through_the_atomic_helper():
    found = []
    for source in sorted(PACKAGE.rglob("*.py")):
        where = str(source.relative_to(PACKAGE))
        if where != "fileio.py":
            found += bypassing_writes(source.read_text(), where)
    assert found == []


# -- one study per work directory -------------------------------------------------------------------------------

def _study(name: str, seeds=(0,)) -> Study:
    base = copy.deepcopy(TINY)
    base["train"]["epochs"] = 1
    return Study(name=name, base=base, grid={"train.seed": list(seeds)})


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_studies_never_share_a_work_directory(tmp_path, monkeypatch, capsys):
    workdir = tmp_path / "w"
    assert sweep(_study("first"), workdir, SerialExecutor()).count("complete") == 1
    before = _digests(workdir)
    with pytest.raises(ConfigError, match=r"holds study 'first' \(its study.yaml\); study 'second' needs its own"):
        sweep(_study("second", seeds=(1,)), workdir, SerialExecutor())
    assert _digests(workdir) == before  # neither the study file nor the store changed

    (tmp_path / "second.yaml").write_text(_study("second", seeds=(1,)).to_yaml())
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "second.yaml", "--out", "w", "--executor", "serial", "--no-report"]) == 2
    assert "holds study 'first'" in capsys.readouterr().err
    assert _digests(workdir) == before
    assert load_study(study_path(workdir)).name == "first"

    again = sweep(_study("first", seeds=(0, 1)), workdir, SerialExecutor())  # the same study may grow
    assert again.skipped == 1 and again.count("complete") == 1
    assert yaml.safe_load(study_path(workdir).read_text())["grid"]["train.seed"] == [0, 1]


def test_an_unreadable_study_file_is_replaced_only_when_the_store_holds_no_other_study(tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    study_path(workdir).write_text("")  # what a kill mid-write of an older version left behind
    assert sweep(_study("first"), workdir, SerialExecutor()).count("complete") == 1
    assert load_study(study_path(workdir)).name == "first"
    study_path(workdir).write_text("name: [unterminated\n")
    with pytest.raises(ConfigError, match="cannot be read and the store there holds runs of 'first'"):
        sweep(_study("second"), workdir, SerialExecutor())
    assert RunStore(store_path(workdir)).studies() == ["first"]
    assert [p.name for p in workdir.iterdir() if p.name.startswith(".")] == []  # no temporary left
