"""Names printed to a terminal: control characters and stray bytes shown, never obeyed."""

from __future__ import annotations

import os

import numpy as np
from helpers import FakeBackbone, many_images

from headstart.classify.predict import Predictions, format_predictions
from headstart.extract import extract_features
from headstart.features.cli import describe
from headstart.words import shown

TITLE = "\x1b]0;pwned\x07"  # sets the terminal window's title
CLEAR = "\x1b[2J\x1b[H"  # clears the screen
SPOOF = "cat\u202egpj.exe"  # right-to-left override: shows as catexe.jpg


def test_shown_makes_every_control_character_visible():
    assert shown("Cat/001.jpg") == "Cat/001.jpg"
    assert shown(TITLE) == "\\x1b]0;pwned\\x07"
    assert shown(CLEAR + "x\r\n\t") == "\\x1b[2J\\x1b[Hx\\x0d\\x0a\\x09"
    assert shown(SPOOF) == "cat\\u202egpj.exe"
    assert shown(os.fsdecode(b"caf\xe9.jpg")) == "caf\\xe9.jpg"
    assert shown("Bär, 猫 and spaces") == "Bär, 猫 and spaces"


def test_predict_and_features_info_print_names_escaped(tmp_path):
    """predict printed escape sequences in file names as they were."""
    names = [f"{TITLE}.jpg", f"{CLEAR}.jpg", f"{SPOOF}.jpg"]
    predictions = Predictions(names, np.tile([[0.1, 0.9]], (3, 1)), [TITLE, "dog"])
    text = format_predictions(predictions, top_k=2)
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert "\\x1b]0;pwned\\x07.jpg" in text
    folder = many_images(tmp_path / "pets", 4)
    (folder / "Cat" / f"{CLEAR}.jpg").write_bytes(b"not an image")
    lines = []
    out = tmp_path / "features.h5"
    extract_features(folder, out, weights="none", model=FakeBackbone(), progress=False,
                     log=lines.append)
    assert any("\\x1b[2J" in line for line in lines) and not any("\x1b" in line
                                                                 for line in lines)
    info = describe(out, list_skipped=True)
    assert "\\x1b[2J" in info and "\x1b" not in info
