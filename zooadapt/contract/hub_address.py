"""``hf://`` addresses in huggingface_hub's grammar: ``hf://<org>/<repo>[@<revision>][/<path>]``.

Read with huggingface_hub's own parser (``parse_hf_uri``: special refs such as ``refs/pr/3``,
``%2F`` in branch names, ``@`` inside file names), so an address means in zooadapt what it
means in ``HfFileSystem``, the ``hf`` CLI and the datasets library, and written in the same
form (``hf://timm/resnet34.tv_in1k@main/model.safetensors``) wherever zooadapt prints one.

zooadapt loads model repositories: ``hf://datasets/…``, ``hf://spaces/…`` (and kernels,
buckets) are refused by name. zooadapt's earlier spelling ``hf://org/repo/file@revision``
(the revision last) is still read when the standard grammar would see a file name with an
``@`` in it and no revision, with a ``FutureWarning`` giving the standard spelling; to name a
file that really has an ``@`` in it, give the revision first: ``hf://org/repo@main/x@y``.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

from .errors import WeightsNotFoundError

__all__ = ["HubAddress", "parse_hub_address", "format_hub_address", "is_hub_address"]

PREFIX = "hf://"
FORM = "hf://org/repo[@revision][/file]"
_OTHER_KINDS = ("datasets", "spaces", "kernels", "buckets")
_SPECIAL_REF = re.compile(r"refs/(?:convert/[\w.-]+|pr/\d+)")  # huggingface_hub keeps these verbatim


@dataclass(frozen=True)
class HubAddress:
    """A parsed ``hf://`` address of a model repository."""

    repo_id: str
    revision: str | None = None
    """None when the address names none (the caller's default applies: ``main``)."""
    path: str | None = None
    """The file in the repository; None when the address names the repository itself."""
    old_form: bool = False
    """Written as ``hf://org/repo/file@revision`` (zooadapt's earlier grammar)."""

    def __str__(self) -> str:
        return format_hub_address(self.repo_id, self.revision, self.path)


def is_hub_address(text: object) -> bool:
    return isinstance(text, str) and text.startswith(PREFIX)


def format_hub_address(repo_id: str, revision: str | None = None, path: str | None = None) -> str:
    """``hf://org/repo[@revision][/path]``, encoding a ``/`` in a branch name as ``%2F`` the way
    huggingface_hub does (its special refs ``refs/pr/N`` and ``refs/convert/…`` stay as they are)."""
    text = PREFIX + repo_id
    if revision:
        text += "@" + (revision if "/" not in revision or _SPECIAL_REF.fullmatch(revision)
                       else revision.replace("/", "%2F"))
    return text + (f"/{path}" if path else "")


def parse_hub_address(text: str) -> HubAddress:
    """Read an ``hf://`` address; raises ``WeightsNotFoundError`` saying what is wrong and the form to use."""
    from huggingface_hub import parse_hf_uri
    from huggingface_hub.errors import HfUriError

    body = text[len(PREFIX):] if text.startswith(PREFIX) else text
    kind = body.split("/", 1)[0]
    if kind in _OTHER_KINDS:
        raise WeightsNotFoundError(
            f"{text!r} names a {kind[:-1]} repository on the Hub; zooadapt loads weights from model repositories. "
            f"Write {FORM}, e.g. hf://timm/resnet34.tv_in1k@main/model.safetensors")
    try:
        uri = parse_hf_uri(PREFIX + body)
    except HfUriError as exc:
        raise WeightsNotFoundError(f"{text!r} is not a Hub address ({exc.msg.strip()}); write {FORM}, e.g. "
                                   "hf://timm/resnet34.tv_in1k@main/model.safetensors") from None
    path = uri.path_in_repo.strip("/") or None
    if uri.revision is None and path is not None and "@" in path:
        return _old_form(text, uri.id, path)
    return HubAddress(repo_id=uri.id, revision=uri.revision, path=path)


def _old_form(text: str, repo_id: str, path: str) -> HubAddress:
    """``hf://org/repo/file@revision``: the revision after the last ``@``, with a note on the standard form."""
    before, _, revision = path.rpartition("@")
    filename = before.strip("/") or None
    if not revision or "/" in revision and not _SPECIAL_REF.fullmatch(revision):
        return HubAddress(repo_id=repo_id, path=path)  # not a revision: a file name that holds an '@'
    standard = format_hub_address(repo_id, revision, filename)
    warnings.warn(
        f"{text!r} is zooadapt's old spelling of {standard!r} (revision last); huggingface_hub's standard form "
        f"puts the revision after the repository: {standard}. For a file whose name contains '@', write "
        f"{format_hub_address(repo_id, 'main', path)}.", FutureWarning, stacklevel=3)
    return HubAddress(repo_id=repo_id, revision=revision, path=filename, old_form=True)
