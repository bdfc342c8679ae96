"""One forward pass at batch 1 that knows, at every moment, which module is running and how its children chained.

Two jobs need this. The summary needs to know which containers compute a volume of their own (an Inception
module's concatenation, a residual block's addition) and which merely chain their children (an ``nn.Sequential``
wrapper), and which rows sit inside which. And a forward pass that fails (an input of the wrong size) must say
*where*: torch's ``mat1 and mat2 shapes cannot be multiplied`` names no layer, so the innermost module still
running when it was raised is named instead, with the input it got and the input it expects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from export.arithmetic import ShapeError
from export.layer_predict import pair


@dataclass(eq=False)
class Call:
    """One module call: where it sits in the call tree, what it received, and how its direct children chained.

    ``last`` starts as the call's own input and becomes each direct child's output in turn; the children form a
    *plain chain* when every one took the previous one's output and the call returned the last one's output.
    """

    module: nn.Module
    name: str
    parent: Call | None
    input: Any  # the first positional argument
    last: Any = None
    chained: bool = True
    child_calls: int = 0
    output: Any = None
    params: int = 0  # the summary's sums over the layers within (each layer counted once)
    macs: int = 0
    unshared_params: int = 0
    row: bool = False  # the summary made this call a row of its own
    row_below: bool = False  # some call inside it is a row

    @property
    def leaf(self) -> bool:
        """A module without submodules: a layer."""
        return next(self.module.children(), None) is None

    @property
    def plain_chain(self) -> bool:
        """The call only passed its input through its children in turn; its output is its last child's."""
        return self.chained and self.child_calls > 0 and self.output is self.last

    def depth(self) -> int:
        """1 + the number of enclosing calls that are rows: the nesting a reader sees in the table."""
        depth, parent = 1, self.parent
        while parent is not None:
            depth += parent.row
            parent = parent.parent
        return depth


def _smallest(module: nn.Module) -> str:
    """The smallest H×W a conv/pool window fits in: D·(F − 1) + 1 − 2P per side (empty for 'same' padding)."""
    if isinstance(module.padding, str):
        return ""
    kernel, padding = pair(module.kernel_size), pair(module.padding)  # type: ignore[arg-type]
    dilation = pair(getattr(module, "dilation", 1))
    side = [max(d * (k - 1) + 1 - 2 * p, 1) for k, p, d in zip(kernel, padding, dilation, strict=True)]
    return f" of at least {side[0]}×{side[1]}"


def _expects(module: nn.Module) -> str:
    """What a layer needs from its input, in the words of its constructor."""
    if isinstance(module, nn.Conv2d):
        return f"; it expects {module.in_channels} channels{_smallest(module)}"
    if isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
        return f"; it expects channels{_smallest(module)}"
    if isinstance(module, nn.Linear):
        return f"; it expects {module.in_features} input features"
    if isinstance(module, nn.BatchNorm2d):
        return f"; it expects {module.num_features} channels"
    return ""


def _failure(call: Call, input_size: tuple[int, ...], err: Exception) -> str:
    shape = list(call.input.shape[1:]) if isinstance(call.input, torch.Tensor) else "?"
    torch_says = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    where = call.name or "the model"
    return (
        f"the forward pass at input {'×'.join(map(str, input_size))} failed in {where} "
        f"({type(call.module).__name__}): its input is {shape}{_expects(call.module)} (torch: {torch_says})"
    )


def run(model: nn.Module, input_size: tuple[int, ...], on_return: Callable[[Call], None] | None = None) -> Any:
    """Run ``model`` once on zeros of shape (1, *input_size) in eval mode, calling ``on_return`` as each call ends.

    Calls end innermost first, so a container's ``on_return`` comes after its children's. A call's tensors are
    released once ``on_return`` has seen them, so a whole pass's activations are not kept alive.

    Raises:
        ShapeError: the pass failed (``RuntimeError``/``ValueError`` from torch, typically a wrong input size);
            the message names the innermost module running, its input shape and what it expects.
    """
    names = {id(m): n for n, m in model.named_modules()}
    stack: list[Call] = []

    def pre(module: nn.Module, args: tuple[Any, ...]) -> None:
        first = args[0] if args else None
        stack.append(Call(module, names.get(id(module), ""), stack[-1] if stack else None, first, last=first))

    def post(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        call = stack.pop()
        call.output = output
        if call.parent is not None:
            call.parent.chained &= call.input is call.parent.last
            call.parent.child_calls += 1
            call.parent.last = output
        if on_return is not None:
            on_return(call)
        call.input = call.last = call.output = None

    handles = [h for m in model.modules() for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(torch.zeros(1, *input_size))
    except (RuntimeError, ValueError) as err:
        if isinstance(err, ShapeError):
            raise
        if not stack:  # torch refused the input itself (too large to allocate), before any module ran
            size = "×".join(str(d) for d in input_size)
            raise ShapeError(f"the forward pass at input {size} failed before any layer ran: {err}") from err
        raise ShapeError(_failure(stack[-1], input_size, err)) from err
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
