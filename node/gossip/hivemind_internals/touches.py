"""`Touch`: one place where rankswarm reaches past hivemind's public API, declared with its reason.

Every module of this package lists what it touches (`TOUCHES`); tests/node/test_hivemind_seam.py
checks each declaration against the installed hivemind (the name still exists, as a function
with the parameters the code relies on) and checks the package's source for private names it
uses without declaring them. An upgrade that renames one fails that test, naming it, instead
of silently bringing back the hivemind behaviour the override exists to prevent.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import textwrap
from dataclasses import dataclass
from typing import Literal

How = Literal["override", "wrap", "replace", "read", "write"]


@dataclass(frozen=True)
class Touch:
    owner: str  # dotted path of a hivemind module, or of a class in one ("hivemind.optim.optimizer.Optimizer")
    name: str  # the attribute: a method we override or wrap, a module function we replace, a field we read
    how: How
    why: str
    params: tuple[str, ...] | None = None  # parameter names the code relies on (a function); None: not a call

    def resolve_owner(self) -> object:
        module_path, _, attribute = self.owner.rpartition(".")
        try:
            return importlib.import_module(self.owner)
        except ImportError:
            return getattr(importlib.import_module(module_path), attribute)

    def problem(self) -> str | None:
        """None if the installed hivemind still has `owner.name` as the code expects, else what changed."""
        try:
            owner = self.resolve_owner()
        except (ImportError, AttributeError) as err:
            return f"{self.owner} is gone ({err})"
        if not hasattr(owner, self.name):
            # an instance attribute exists only once an object is built: look for where the class sets it
            if inspect.isclass(owner) and self.params is None and _sets_attribute(owner, self.name):
                return None
            if dataclasses.is_dataclass(owner) and self.name in {field.name for field in dataclasses.fields(owner)}:
                return None
            return f"{self.owner}.{self.name} is gone"
        if self.params is None:
            return None
        target = getattr(owner, self.name)
        if not callable(target):
            return f"{self.owner}.{self.name} is no longer callable"
        found = tuple(inspect.signature(target).parameters)
        missing = [name for name in self.params if name not in found]
        if missing:
            return f"{self.owner}.{self.name}{inspect.signature(target)} no longer takes {missing}"
        return None


def _sets_attribute(cls: type, name: str) -> bool:
    """Some method of `cls` assigns `self.<name>` (alone or in a tuple)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        for target in targets:
            for element in (target.elts if isinstance(target, ast.Tuple) else [target]):
                if (isinstance(element, ast.Attribute) and element.attr == name
                        and isinstance(element.value, ast.Name) and element.value.id == "self"):
                    return True
    return False
