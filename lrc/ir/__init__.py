"""The IR: symbolic tensors and tracing, the Graph, its printer and checker, the reference."""
from ..errors import CallError, SpecError, Src
from .dims import Annotation, Param, Role, Seq, State
from .graph import Graph
from .nodes import Input, Map, Rename, Shift, Sum
from .trace import Spec, recurrence
from .verify import IRError, verify

__all__ = ["Annotation", "CallError", "Graph", "IRError", "Input", "Map", "Param", "Rename",
           "Role", "Seq", "Shift", "Spec", "SpecError", "Src", "State", "Sum", "recurrence",
           "verify"]
