"""The component's exports, for componentize-py: `@plugin` puts the class
`world(cls)` makes in the plugin's module as `WitWorld`, the name
componentize-py looks for."""

import gc

from componentize_py_types import Err  # type: ignore[import-not-found]
from wit_world.imports import types as T  # type: ignore[import-not-found]

from . import Step, describe
from ._params import ParamsError

_UNCHANGED = T.Output_Unchanged()
_DROP = T.Outcome_Drop()
_ONE = T.Outcome_Emit(1)


def _emit(n):
    return _ONE if n == 1 else T.Outcome_Emit(n)


def world(cls):
    # One instance of the component holds one configured step.
    state = {}

    class WitWorld:
        def describe(self):
            name, version, summary, schema = describe(cls)
            return T.Description(name, version, summary, schema)

        def configure(self, params):
            try:
                state["step"] = Step(cls, params)
            except (ParamsError, ValueError) as e:
                raise Err(str(e)) from None
            except Exception as e:  # noqa: BLE001 - shown to the operator as the step's error
                raise Err(f"{type(e).__name__}: {e}") from None
            # What exists now (the interpreter, the modules, the step) lives
            # as long as the instance: out of the collector's sight, so a
            # collection during a batch scans only the batch's objects.
            gc.collect()
            gc.freeze()

        def fields(self):
            step = state.get("step")
            if step is None or step.projection is None:
                return None
            reads, writes = step.projection
            return T.Projection(reads, writes)

        def transform(self, input):
            step = state.get("step")
            if step is None:
                step = state["step"] = Step(cls, "{}")
            # Records are trees: reference counting frees them. The cycle
            # collector waits for the end of the call instead of running
            # every few hundred records.
            gc.disable()
            try:
                out = step.transform(input, _emit, _DROP, T.Outcome_Reject)
            finally:
                gc.enable()
            if out is None:
                return _UNCHANGED
            c, outcomes = out
            batch = T.Batch(c.keys, c.text, c.cell_keys, c.cell_kinds, c.cell_values, c.records)
            return T.Output_Changed(T.Changed(batch, outcomes))

    return WitWorld
