"""What a webui must provide to a ``Session``: one adapter per webui family (``a1111``, ``forge``)."""
from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Protocol

from torch import nn

if TYPE_CHECKING:
    from .session import Session


class Adapter(Protocol):
    """What a webui must provide."""

    name: str
    reports_calls: bool  # U-Net calls are reported by a wrapper the webui may let another extension replace

    def unet(self, p: Any) -> nn.Module:
        """The U-Net of the model ``p`` samples with; raises ``UnsupportedModel`` for anything else."""

    def unet_of_model(self, model: Any) -> nn.Module:
        """The U-Net of a loaded model (``shared.sd_model``)."""

    def install(self, session: Session, unet: nn.Module) -> None:
        """Install the session's engine on ``unet`` the way this webui reports U-Net calls."""

    def prepare(self, p: Any, session: Session) -> None:
        """Arrange for ``session.begin_run`` to be called once the run's schedule is known."""

    def release(self) -> None:
        """Undo whatever ``prepare`` attached to webui objects."""

    def control_models(self, p: Any) -> list[nn.Module]:
        """The ControlNet models (any kind) that will run beside the U-Net in this generation."""

    def interrupted(self) -> bool:
        """The user stopped the job's sampling early (Interrupt, Skip)."""

    def task(self) -> Hashable | None:
        """What tells the webui's jobs apart (one API request, one Generate click); None when unknown."""

    def conflict(self) -> str | None:
        """Why DeepCache must not act on the run about to sample (another cache or wrapper decides which U-Net
        calls run), asked at its first denoiser call when every extension's patch is in place; None if nothing."""
