"""Graph -> Graph passes, each a pure function in its own file, run in PIPELINE order."""
from .complex import lower_complex
from .expand import expand_discretizations
from .linearity import check_linear
from .stability import log_space_decays, max_trick, segment_decay, stabilize

# lower_complex is not listed yet: it runs after the structure classification, which must see
# complex diagonals as diagonal
PIPELINE = (check_linear, expand_discretizations, stabilize)

__all__ = ["PIPELINE", "check_linear", "expand_discretizations", "log_space_decays",
           "lower_complex", "max_trick", "segment_decay", "stabilize"]
