"""Alrao: all learning rates at once (Blier, Wolinski, Ollivier, ECML-PKDD 2019).

Typical training step::

    groups = alrao_param_groups(body)
    head = AlraoHead(features, classes, num_copies=10, lr_min=1e-5, lr_max=10.0)
    opt = AlraoSGD([*groups, head.param_group()], lr_min=1e-5, lr_max=10.0, seed=0)
    out = head(body(x), y); opt.zero_grad(); out.loss.backward(); opt.step()
    head.switch.update(out.copy_loglik)
"""

from .grouping import alrao_param_groups, rate_shape, with_rate_range
from .head import AlraoHead, HeadOutput, posterior_table, preferred_lr
from .optim import AlraoAdam, AlraoSGD, alrao_adam, alrao_sgd
from .switch import Switch

__all__ = [
    "AlraoAdam",
    "AlraoHead",
    "AlraoSGD",
    "HeadOutput",
    "Switch",
    "alrao_adam",
    "alrao_param_groups",
    "alrao_sgd",
    "posterior_table",
    "preferred_lr",
    "rate_shape",
    "with_rate_range",
]
