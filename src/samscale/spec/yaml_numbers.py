"""YAML reading with numbers as people write them: `5e-2` and `1e4` are floats, not strings.

PyYAML follows YAML 1.1, whose float pattern needs a dot and a signed exponent (`5.0e-2`), so `5e-2` would arrive
as the string '5e-2' and a float field would refuse it (or, in a free-form mapping such as a selection rule's
`default`, keep a string that fails much later). This loader resolves the YAML 1.2 core float forms instead.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

FLOAT = re.compile(r"""^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X)


class NumberLoader(yaml.SafeLoader):
    """yaml.SafeLoader whose floats include exponent forms without a dot or a sign (`5e-2`, `1E4`)."""


NumberLoader.yaml_implicit_resolvers = {key: list(resolvers) for key, resolvers in
                                        yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in list("-+.0123456789"):
    NumberLoader.yaml_implicit_resolvers[_first] = [
        (tag, pattern) for tag, pattern in NumberLoader.yaml_implicit_resolvers.get(_first, [])
        if tag != "tag:yaml.org,2002:float"
    ]
# Integers keep their own resolver (registered earlier, so it wins for `10`); anything else of FLOAT's form is a float.
NumberLoader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT, list("-+.0123456789"))


def safe_load(text: str) -> Any:
    """yaml.safe_load with NumberLoader: plain data only, exponent floats read as floats."""
    loader = NumberLoader(text)  # a SafeLoader: builds plain data only
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
