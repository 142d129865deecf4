"""What huggingface_hub raises as ``ValueError`` is named for what it is (issue #20).

The client raises ``HFValidationError`` (a ``ValueError``) for a repo id or file name it will not
use: that is an address the user wrote, and the error says so. It also raises plain
``ValueError`` for reasons that have nothing to do with the address ("Force download failed due
to the above error", "file too large for the regular download", "Invalid pointer path"): those
are download failures, named with the client's words and its cause, never "not a valid Hub
address".
"""

from __future__ import annotations

import huggingface_hub
import pytest
from huggingface_hub.errors import HFValidationError

from zooadapt.errors import DownloadError, WeightSourceError
from zooadapt.plugin_api import WeightSource
from zooadapt.weights.sources import fetch

SOURCE = WeightSource(repo_id="test/client-errors", filename="model.safetensors")
CLIENT_VALUE_ERRORS = [
    ("Force download failed due to the above error.", ConnectionError("connection reset by peer")),
    ("The file is too large to be downloaded using the regular download method.", None),
    ("Invalid pointer path: cannot create pointer path in snapshot folder", None),
]


def _client_raising(monkeypatch, error: BaseException) -> None:
    def hf_hub_download(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise error

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)


@pytest.mark.parametrize(("message", "cause"), CLIENT_VALUE_ERRORS)
def test_a_client_value_error_is_a_download_error_in_the_clients_words(monkeypatch, tmp_path, message, cause):
    error = ValueError(message)
    error.__cause__ = cause
    _client_raising(monkeypatch, error)
    with pytest.raises(DownloadError) as info:
        fetch(SOURCE, revision="main", cache_dir=tmp_path)
    text = str(info.value)
    assert message in text and "not a valid Hub address" not in text
    assert (f"because: ConnectionError: {cause}" in text) == (cause is not None)
    assert "HF_ENDPOINT" in text and not any(tmp_path.iterdir())


def test_an_address_the_client_will_not_use_is_named_as_the_address(monkeypatch, tmp_path):
    _client_raising(monkeypatch, HFValidationError("Repo id must use alphanumeric chars"))
    with pytest.raises(WeightSourceError, match="is not a valid Hub address: Repo id must use") as info:
        fetch(SOURCE, revision="main", cache_dir=tmp_path)
    assert not isinstance(info.value, DownloadError)
