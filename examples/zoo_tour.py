"""A tour of lrc's zoo: every seed system as a spec, its traced IR, and one run of each.

    python examples/zoo_tour.py            # all systems
    python examples/zoo_tour.py s4 lru     # some

Run time on a 2-core CPU, where CPU tensors run on the torch lowering: about 7 s for all
systems, imports included.
"""
from __future__ import annotations

import sys

import lrc
from lrc.zoo import ZOO


def main(names: list[str]) -> None:
    for name in names or ZOO:
        entry = ZOO[name]
        print(f"== {name}: {entry.doc} ==")
        print(entry.spec.graph)
        layer = lrc.compile(entry.spec)
        out, final = layer(**entry.example(), initial_state=entry.initial_state(),
                           return_final_state=True)
        outs = out if isinstance(out, tuple) else (out,)
        finals = final if isinstance(final, tuple) else (final,)
        print("outputs", [tuple(y.shape) for y in outs], "states",
              [tuple(s.shape) for s in finals], "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
