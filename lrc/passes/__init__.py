"""Graph -> Graph passes, each a pure function in its own file, run in PIPELINE order."""
from ..ir.linearity import check_linear
from .cleanup import merge_duplicates
from .complex import lower_complex
from .derivatives import derive_backward
from .expand import expand_discretizations
from .lowering import choose_lowering
from .pipeline import PIPELINE
from .stability import log_space_decays, max_trick, segment_decay, stabilize
from .structure import classify

__all__ = ["PIPELINE", "check_linear", "choose_lowering", "classify", "derive_backward",
           "expand_discretizations", "log_space_decays", "lower_complex", "max_trick",
           "merge_duplicates",
           "segment_decay", "stabilize"]
