"""RunSpec validation, canonical identity (run_id) and overrides."""
import pytest

from samscale.errors import ConfigError
from samscale.spec.run import RunSpec, build_spec, flatten, parse_override


def test_run_id_is_stable_and_ignores_non_identity_fields():
    a = build_spec({"optim": {"name": "sam", "rho": 0.1}})
    b = build_spec({"optim": {"rho": 0.1, "name": "sam"}, "runtime": {"threads": 4}, "name": "other",
                    "analysis": {"what": ["lambda_max"]}})
    assert a.run_id == b.run_id
    assert len(a.run_id) == 16 and int(a.run_id, 16) >= 0
    # the id is a pure function of the canonical form: a fresh object built from JSON has the same id
    assert RunSpec.model_validate_json(a.model_dump_json()).run_id == a.run_id


def test_run_id_changes_with_every_identity_field():
    base = build_spec({})
    changed = [
        build_spec({}, ["model.size=4"]),
        build_spec({}, ["train.seed=1"]),
        build_spec({}, ["optim.name=sam"]),
        build_spec({}, ["data.label_noise=0.2"]),
        build_spec({}, ["train.epochs=3"]),
        build_spec({}, ["schedule.kind=cosine"]),
    ]
    ids = {spec.run_id for spec in changed} | {base.run_id}
    assert len(ids) == len(changed) + 1


def test_sam_only_settings_do_not_split_sgd_runs():
    assert build_spec({}, ["optim.rho=0.3"]).run_id == build_spec({}, ["optim.rho=0.01"]).run_id
    assert build_spec({}, ["optim.name=sam", "optim.rho=0.3"]).run_id != build_spec(
        {}, ["optim.name=sam", "optim.rho=0.01"]).run_id


def test_overrides_parse_yaml_values():
    assert parse_override("optim.rho=0.1") == ("optim.rho", 0.1)
    assert parse_override("schedule.milestones=[0.5, 0.75]") == ("schedule.milestones", [0.5, 0.75])
    assert parse_override("data.train_subset=null") == ("data.train_subset", None)
    spec = build_spec({}, ["optim.name=usam", "model.size=0.25"])
    assert spec.optim.name == "usam" and spec.model.size == 0.25
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("optim.rho")


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("optim.name=sgdd", ["optim.name", "'sgdd'", "'sam'"]),
        ("model.family=mlpp", ["model.family", "mlpp", "resnet18"]),
        ("data.name=cifar11", ["data.name", "cifar11", "mnist"]),
        ("optim.lr=-1", ["optim.lr", "-1"]),
        ("data.label_noise=1.5", ["data.label_noise", "1.5"]),
        ("train.epochs=0", ["train.epochs", "0"]),
        ("optim.rhoo=0.1", ["optim.rhoo", "valid fields of optim", "rho,"]),
        ("schedule.milestones=[0.75, 0.5]", ["schedule.milestones", "increasing"]),
    ],
)
def test_config_errors_name_field_value_and_choices(override, fragments):
    with pytest.raises(ConfigError) as info:
        build_spec({}, [override])
    for fragment in fragments:
        assert fragment in str(info.value)


def test_sparsity_needs_a_method():
    with pytest.raises(ConfigError, match="sparsity"):
        build_spec({}, ["sparsity.sparsity=0.5"])
    assert build_spec({}, ["sparsity.method=random", "sparsity.sparsity=0.5"]).sparsity.sparsity == 0.5


def test_flatten_gives_dotted_keys():
    flat = flatten({"a": {"b": 1, "c": {"d": 2}}, "e": [1, 2], "options": {}})
    assert flat == {"a.b": 1, "a.c.d": 2, "e": [1, 2], "options": {}}
    assert build_spec({}).flat()["optim.rho"] == 0.05
