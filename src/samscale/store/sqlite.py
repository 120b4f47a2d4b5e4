"""The run store: one SQLite file (WAL mode) holding every run, its per-epoch history, analyses and code version.

Several processes may write one store at once (sweeps, workers): each write is a short transaction, and a run is
claimed atomically before it is trained, so two sweeps never train the same run. Each claim draws a fresh token and
counts an attempt; every later write for the run (an epoch, a heartbeat, its end, and through `ClaimFence` its
checkpoint) names its `Claim` and is refused with `ClaimLost`, in the same transaction, once another process has
taken the run over. Everything downstream (tables, selection, reports) reads the store only.
"""
from __future__ import annotations

import functools
import json
import math
import os
import secrets
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd

from samscale.errors import ClaimLost, ConfigError
from samscale.names import check_name
from samscale.process import machine_key, provably_dead
from samscale.spec.run import RunSpec, flatten
from samscale.spec.status import FINISHED, STORED, RunStatus

STATUSES = tuple(status.value for status in STORED)
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "val_return", "test_return",
           "val_ap", "test_ap")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending',
    n_params    INTEGER,
    epochs_done INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    final       TEXT,
    error       TEXT,
    owner       TEXT,
    claim       TEXT,
    heartbeat   REAL,
    code_version TEXT,
    created     REAL NOT NULL,
    updated     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    run_id  TEXT NOT NULL,
    epoch   INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    attempt INTEGER,
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE IF NOT EXISTS analysis (
    run_id TEXT NOT NULL,
    name   TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS study_runs (
    study  TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (study, run_id)
);
"""


STALE_AFTER_ENV = "SAMSCALE_STALE_AFTER_S"
DEFAULT_STALE_AFTER_S = 600.0


@dataclass(frozen=True)
class Claim:
    """This process's hold on a run: the token drawn when it claimed the run, and which attempt that claim was."""

    run_id: str
    token: str
    attempt: int


def _owner() -> str:
    """`host:pid:machine key` of this process (`samscale.process.machine_key`: host, boot and PID namespace)."""
    return f"{socket.gethostname()}:{os.getpid()}:{machine_key() or '?'}"


def _owner_alive(owner: str | None) -> bool:
    """Whether the process named by `owner` may still be running: only a pid recorded with this process's own
    machine key (same host, boot and PID namespace) and gone now is dead; any other owner, including records of
    older stores (`host:pid`), is assumed alive until its heartbeat goes stale."""
    if not owner:
        return False
    parts = owner.split(":")
    if len(parts) < 3 or not parts[-2].isdigit():
        return True
    return not provably_dead(int(parts[-2]), parts[-1])


def _stale_after_default() -> float:
    """`$SAMSCALE_STALE_AFTER_S` if set (e.g. for tests of takeovers), else 600 s."""
    text = os.environ.get(STALE_AFTER_ENV)
    if text is None:
        return DEFAULT_STALE_AFTER_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{STALE_AFTER_ENV} must be a positive number of seconds, got {text!r}")
    return value


def _plain(value: Any) -> Any:
    """JSON-ready copy of `value`: numpy/torch scalars as Python numbers, NaN and ±inf as null (strict JSON)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, RunStatus):
        return value.value
    return value


def _refuse_foreign(db: sqlite3.Connection) -> None:
    """Raise DatabaseError if `db` is not a (possibly new, empty) samscale store, so another program's file stays as
    it is; reading the schema also fails on a file that is not SQLite at all."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return
    columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    if not {"run_id", "spec", "status", "final"} <= columns:
        raise sqlite3.DatabaseError(f"it holds the tables {', '.join(sorted(tables))} but not samscale's runs table")


def _dumps(value: Any) -> str:
    return json.dumps(_plain(value), allow_nan=False)


class RunStore:
    """SQLite-backed store of runs. Safe for several writer processes; each method is one short transaction."""

    def __init__(self, path: str | Path, *, stale_after_s: float | None = None):
        self.path = Path(path)
        self.stale_after_s = _stale_after_default() if stale_after_s is None else stale_after_s
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60.0)
            try:
                _refuse_foreign(db)  # before anything is written to it
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
                for column in ("code_version", "claim"):  # stores written before runs recorded these
                    if column not in columns:
                        db.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT")
                if "attempt" not in {row[1] for row in db.execute("PRAGMA table_info(history)")}:
                    db.execute("ALTER TABLE history ADD COLUMN attempt INTEGER")
            finally:
                db.close()
        except sqlite3.DatabaseError as err:
            raise ConfigError(f"{self.path} is not a samscale run store ({err}); move it aside or pass another "
                              "--workdir") from None
        except OSError as err:
            raise ConfigError(f"cannot open the run store {self.path} ({err.strerror or err}); pass another "
                              "--workdir") from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=60000")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    # -- writing ---------------------------------------------------------------------------------------------
    def register(self, spec: RunSpec, study: str | None = None, n_params: int | None = None) -> str:
        """Add a run (pending) if it is new, and link it to `study`; returns its run_id."""
        if study is not None:
            check_name(study, "study name")
        now = time.time()
        run_id = spec.run_id
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO runs (run_id, spec, n_params, created, updated) VALUES (?, ?, ?, ?, ?)",
                (run_id, spec.model_dump_json(), n_params, now, now),
            )
            db.execute("UPDATE runs SET spec = ? WHERE run_id = ?", (spec.model_dump_json(), run_id))
            if n_params is not None:
                db.execute("UPDATE runs SET n_params = ? WHERE run_id = ?", (n_params, run_id))
            if study:
                db.execute("INSERT OR IGNORE INTO study_runs (study, run_id) VALUES (?, ?)", (study, run_id))
        return run_id

    def register_study(self, specs: list[RunSpec], study: str) -> None:
        """Register many runs of one study in one transaction (new runs pending, known runs kept as they are)."""
        check_name(study, "study name")
        now = time.time()
        rows = [(spec.run_id, spec.model_dump_json()) for spec in specs]
        with self._connect() as db:
            db.executemany("INSERT OR IGNORE INTO runs (run_id, spec, created, updated) VALUES (?, ?, ?, ?)",
                           [(run_id, text, now, now) for run_id, text in rows])
            db.executemany("INSERT OR IGNORE INTO study_runs (study, run_id) VALUES (?, ?)",
                           [(study, run_id) for run_id, _ in rows])

    def statuses(self) -> dict[str, str]:
        """run_id → status of every run in the store (one query, for planning large sweeps)."""
        return {r["run_id"]: r["status"] for r in self._rows("SELECT run_id, status FROM runs")}

    def claim(self, run_id: str, *, retry_failed: bool = True) -> Claim | None:
        """Atomically mark a run as running by this process, unless it is finished or held by a live owner; returns
        the new `Claim` (a fresh token, the next attempt), or None.

        A run left `running` by a process that provably died (pid gone on this host, boot and PID namespace) or
        whose heartbeat is older than `stale_after_s` (any holder: another host, a paused or stopped process) is
        taken over, so a killed sweep's runs resume on the next sweep. The old holder's writes are refused from then on.
        """
        now = time.time()
        claimable = ("pending", "failed") if retry_failed else ("pending",)
        with self._connect() as db:
            row = db.execute("SELECT status, owner, heartbeat, attempts FROM runs WHERE run_id = ?",
                             (run_id,)).fetchone()
            if row is None:
                raise KeyError(f"run {run_id!r} is not registered in {self.path}")
            status, owner, heartbeat, attempts = row
            if status == "running":
                if _owner_alive(owner) and (heartbeat or 0) >= now - self.stale_after_s:
                    return None
            elif status not in claimable:
                return None
            claim = Claim(run_id, secrets.token_hex(16), attempts + 1)
            db.execute(
                "UPDATE runs SET status = 'running', owner = ?, claim = ?, heartbeat = ?, updated = ?, attempts = ? "
                "WHERE run_id = ?",
                (_owner(), claim.token, now, now, claim.attempt, run_id),
            )
            return claim

    def _check(self, db: sqlite3.Connection, claim: Claim) -> None:
        """Raise ClaimLost unless `claim` still holds its run (inside the caller's write transaction)."""
        row = db.execute("SELECT status, claim, attempts, owner FROM runs WHERE run_id = ?",
                         (claim.run_id,)).fetchone()
        if row is not None and row[0] == "running" and row[1] == claim.token:
            return
        if row is None:
            why = "it is no longer in the store"
        elif row[0] == "running":
            why = f"attempt {row[2]} by {row[3]} took it over after this holder's heartbeat went stale"
        else:
            why = f"it is {row[0]} now"
        raise ClaimLost(f"run {claim.run_id} (attempt {claim.attempt}) is no longer held by this process: {why}")

    @contextmanager
    def hold(self, claim: Claim) -> Iterator[None]:
        """A write transaction in which `claim` is checked to hold its run: what the block does (e.g. rename a
        checkpoint into place) happens while no one can take the run over. Raises ClaimLost if it was taken."""
        with self._connect() as db:
            self._check(db, claim)
            yield

    def heartbeat(self, *claims: Claim) -> list[str]:
        """Tell other sweeps these runs are still alive (their holder keeps calling this while it trains them);
        returns the run_ids among them that this process no longer holds (their beats are not written)."""
        lost: list[str] = []
        if not claims:
            return lost
        now = time.time()
        with self._connect() as db:
            for claim in claims:
                cursor = db.execute("UPDATE runs SET heartbeat = ? WHERE run_id = ? AND claim = ? AND "
                                    "status = 'running'", (now, claim.run_id, claim.token))
                if cursor.rowcount == 0:
                    lost.append(claim.run_id)
        return lost

    def reset(self, run_ids: list[str]) -> None:
        """Forget what these runs produced (status back to pending, history and analyses deleted), to train anew."""
        now = time.time()
        with self._connect() as db:
            for run_id in run_ids:
                db.execute("UPDATE runs SET status = 'pending', final = NULL, error = NULL, owner = NULL, "
                           "claim = NULL, epochs_done = 0, code_version = NULL, updated = ? WHERE run_id = ?",
                           (now, run_id))
                db.execute("DELETE FROM history WHERE run_id = ?", (run_id,))
                db.execute("DELETE FROM analysis WHERE run_id = ?", (run_id,))

    def record_epoch(self, claim: Claim, epoch: int, metrics: dict[str, float]) -> None:
        """Store one epoch's metrics of the claimed run, tagged with the claim's attempt (idempotent: a resumed run
        rewrites the same epoch). Raises ClaimLost, writing nothing, if the claim no longer holds the run."""
        now = time.time()
        with self._connect() as db:
            self._check(db, claim)
            db.execute(
                "INSERT OR REPLACE INTO history (run_id, epoch, metrics, attempt) VALUES (?, ?, ?, ?)",
                (claim.run_id, epoch, _dumps(metrics), claim.attempt),
            )
            db.execute(
                "UPDATE runs SET epochs_done = MAX(epochs_done, ?), heartbeat = ?, updated = ? WHERE run_id = ?",
                (epoch, now, now, claim.run_id),
            )

    def finish(self, claim: Claim, status: str, final: dict[str, Any] | None = None, error: str | None = None,
               code_version: str | None = None) -> None:
        """Mark the claimed run complete, diverged or failed, with its final metrics or error text and the code that
        ran it. Raises ClaimLost, writing nothing, if the claim no longer holds the run."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; valid: {', '.join(STATUSES)}")
        with self._connect() as db:
            self._check(db, claim)
            db.execute(
                "UPDATE runs SET status = ?, final = ?, error = ?, owner = NULL, updated = ?, code_version = ? "
                "WHERE run_id = ?",
                (str(status), _dumps(final) if final is not None else None, error, time.time(), code_version,
                 claim.run_id),
            )

    def fence(self, claims: Iterable[Claim]) -> "ClaimFence":
        """The checkpoint fence of these claims, for the trainer (`samscale.train.checkpoint.Fence`)."""
        return ClaimFence(self.path, claims, self.stale_after_s)

    def record_analysis(self, run_id: str, name: str, value: Any) -> None:
        """Store one JSON-serializable analysis result of a run (e.g. lambda_max)."""
        check_name(name, "analysis name")
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO analysis (run_id, name, value) VALUES (?, ?, ?)", (run_id, name, _dumps(value))
            )

    # -- reading ---------------------------------------------------------------------------------------------
    def _rows(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        db = sqlite3.connect(self.path, timeout=60.0)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA busy_timeout=60000")
            return db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as err:
            raise ConfigError(f"cannot read the run store {self.path} ({err}); it may be damaged: move it aside "
                              "or pass another --workdir") from None
        finally:
            db.close()

    def held_runs(self) -> set[str]:
        """run_ids held now by a process that may be alive (running, owner not provably dead, heartbeat fresh)."""
        fresh = time.time() - self.stale_after_s
        rows = self._rows("SELECT run_id, owner, heartbeat FROM runs WHERE status = 'running'")
        return {r["run_id"] for r in rows if _owner_alive(r["owner"]) and (r["heartbeat"] or 0) >= fresh}

    def status(self, run_id: str) -> str | None:
        """The run's status, or None if the store does not know it."""
        rows = self._rows("SELECT status FROM runs WHERE run_id = ?", (run_id,))
        return rows[0]["status"] if rows else None

    def spec(self, run_id: str) -> RunSpec:
        """The RunSpec a run was registered with."""
        rows = self._rows("SELECT spec FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            raise KeyError(f"no run {run_id!r} in {self.path}")
        return RunSpec.model_validate_json(rows[0]["spec"])

    def find(self, prefix: str) -> str:
        """Resolve a unique run_id prefix to the full id."""
        rows = self._rows("SELECT run_id FROM runs WHERE run_id LIKE ?", (prefix + "%",))
        if len(rows) != 1:
            found = "no run" if not rows else f"{len(rows)} runs"
            raise KeyError(f"{found} with id starting {prefix!r} in {self.path}")
        return rows[0]["run_id"]

    def history(self, run_id: str) -> pd.DataFrame:
        """Per-epoch metrics of one run, one row per epoch, with the attempt (claim) that recorded each."""
        rows = self._rows("SELECT epoch, metrics, attempt FROM history WHERE run_id = ? ORDER BY epoch", (run_id,))
        return pd.DataFrame([{"epoch": r["epoch"], **json.loads(r["metrics"]), "attempt": r["attempt"]}
                             for r in rows])

    def code_versions(self, run_ids: list[str] | None = None) -> dict[str, str | None]:
        """run_id → the code version that finished it (None for unfinished runs and old stores)."""
        rows = self._rows("SELECT run_id, code_version FROM runs WHERE status IN ('complete', 'diverged')")
        versions = {r["run_id"]: r["code_version"] for r in rows}
        return versions if run_ids is None else {run_id: versions.get(run_id) for run_id in run_ids}

    def studies(self) -> list[str]:
        """Names of the studies with runs in this store."""
        return [r["study"] for r in self._rows("SELECT DISTINCT study FROM study_runs ORDER BY study")]

    def runs_frame(self, study: str | None = None) -> pd.DataFrame:
        """One row per run: run_id, status, flattened spec fields (dotted), n_params, final metrics, analyses.

        Specs are read with json.loads + flatten (they were written by `RunSpec.model_dump_json`, so they already
        hold every field); only a spec whose fields differ from the current RunSpec's (an older store) is validated
        with pydantic, which fills the fields it lacks with their defaults.
        """
        if study is None:
            rows = self._rows("SELECT * FROM runs ORDER BY created")
            analysis_rows = self._rows("SELECT run_id, name, value FROM analysis")
        else:
            rows = self._rows(
                "SELECT runs.* FROM runs JOIN study_runs USING (run_id) WHERE study = ? ORDER BY created", (study,)
            )
            analysis_rows = self._rows("SELECT analysis.run_id, name, value FROM analysis JOIN study_runs "
                                       "USING (run_id) WHERE study = ?", (study,))
        analyses: dict[str, dict[str, Any]] = {}
        for r in analysis_rows:
            analyses.setdefault(r["run_id"], {})[f"analysis.{r['name']}"] = json.loads(r["value"])
        if not rows:
            return pd.DataFrame()
        flats = []
        for r in rows:
            flat = _flat_sections(json.loads(r["spec"]))
            if flat.keys() != _spec_fields():
                flat = flatten(RunSpec.model_validate_json(r["spec"]).model_dump(mode="json"))
            flats.append(flat)
        columns: dict[str, list[Any]] = {"run_id": [r["run_id"] for r in rows], "status": [r["status"] for r in rows],
                                         "label": [_label(flat) for flat in flats]}
        columns.update({key: [flat[key] for flat in flats] for key in flats[0]})
        columns.update({name: [r[name] for r in rows] for name in ("n_params", "epochs_done", "attempts",
                                                                    "code_version")})
        columns["epochs"] = columns["train.epochs"]
        frame = pd.DataFrame(columns)
        finals = pd.DataFrame.from_records([json.loads(r["final"]) if r["final"] else {} for r in rows])
        for column in [c for c in finals.columns if c in frame.columns]:  # the final summary has the last word
            frame[column] = finals.pop(column).combine_first(frame[column])
        extra = pd.DataFrame.from_records([analyses.get(r["run_id"], {}) for r in rows])
        frame = pd.concat([frame, finals, pd.DataFrame({"error": [r["error"] for r in rows]}), extra], axis=1)
        missing = [f"{kind}_{m}" for kind in ("final", "best") for m in METRICS if f"{kind}_{m}" not in frame]
        if missing:
            frame = pd.concat([frame, pd.DataFrame(float("nan"), index=frame.index, columns=missing)], axis=1)
        return frame


@functools.lru_cache(maxsize=1)
def _spec_fields() -> frozenset[str]:
    """The dotted field names of a current RunSpec (what a spec read from the store must have to skip validation)."""
    return frozenset(RunSpec().flat())


def _flat_sections(tree: dict[str, Any]) -> dict[str, Any]:
    """`flatten` for the two levels of a stored spec (section → field), several times faster on 100k runs.

    A spec with deeper nesting comes out with other keys than `_spec_fields()` and is then validated instead.
    """
    flat: dict[str, Any] = {}
    for section, fields in tree.items():
        if isinstance(fields, dict) and fields:
            flat.update({f"{section}.{key}": value for key, value in fields.items()})
        else:
            flat[section] = fields
    return flat


def _label(flat: dict[str, Any]) -> str:
    """`RunSpec.label()` from a flattened spec, without building the RunSpec."""
    name, rho = flat["optim.name"], flat["optim.rho"]
    opt = name if name == "sgd" else f"{name}(rho={rho:g})"
    return f"{flat['model.family']}[{flat['model.size']}] {opt} seed={flat['train.seed']}"


class ClaimFence:
    """Checkpoint writes of claimed runs, fenced by their claims (`samscale.train.checkpoint.Fence`).

    `hold(run_id)` is a store write transaction that first checks the claim still holds the run (else ClaimLost):
    a checkpoint renamed into place inside it can never overwrite the checkpoint of a sweep that took the run over.
    It pickles (store path and claims), so the processes of a multi-process run write through it as well.
    """

    def __init__(self, path: str | Path, claims: Iterable[Claim], stale_after_s: float | None = None):
        self.path = Path(path)
        self.claims = {claim.run_id: claim for claim in claims}
        self.stale_after_s = stale_after_s
        self._store: RunStore | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None}

    def attempt(self, run_id: str) -> int | None:
        """The attempt that holds `run_id` here (None when this fence does not hold it)."""
        claim = self.claims.get(run_id)
        return None if claim is None else claim.attempt

    @contextmanager
    def hold(self, run_id: str) -> Iterator[None]:
        """Run the block only while this fence's claim still holds `run_id`; raise ClaimLost otherwise."""
        claim = self.claims.get(run_id)
        if claim is None:
            raise ClaimLost(f"run {run_id} is not held through this fence (held: {', '.join(self.claims) or 'none'})")
        if self._store is None:
            self._store = RunStore(self.path, stale_after_s=self.stale_after_s)
        with self._store.hold(claim):
            yield
