"""From folders to catalogs: formats, links, counting, layouts and label sources."""

from __future__ import annotations

import os
import unicodedata

import pytest
from helpers import FakeBackbone, write_image

from headstart.errors import FolderError, LabelsError, UsageError
from headstart.extract import extract_features
from headstart.extract.catalog import scan
from headstart.extract.formats import image_extensions
from headstart.extract.labels import LabelSpec
from headstart.features import open_store

# ---- formats ------------------------------------------------------------------------------

def test_every_extension_pillow_decodes_is_an_image_and_stubs_are_not():
    from PIL import Image

    extensions = image_extensions()
    for ext in (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".avif", ".webp", ".tif", ".bmp",
                ".gif", ".heic", ".heif"):
        assert ext in extensions, ext
    registry = Image.registered_extensions()
    assert registry[".h5"] == "HDF5" and ".h5" not in extensions  # identified, never decoded
    assert ".mpg" not in extensions and ".pdf" not in extensions


def test_jfif_avif_and_heic_are_stored_not_dropped(tmp_path):
    write_image(tmp_path / "Cat" / "IMG_0004.jfif", fmt="JPEG")
    write_image(tmp_path / "Cat" / "IMG_0002.avif", fmt="AVIF")
    write_image(tmp_path / "Cat" / "IMG_0001.HEIC", fmt="HEIF")
    write_image(tmp_path / "Dog" / "a.jpe", fmt="JPEG")
    catalog = scan(tmp_path)
    assert catalog.files == ["Cat/IMG_0001.HEIC", "Cat/IMG_0002.avif", "Cat/IMG_0004.jfif",
                             "Dog/a.jpe"]
    assert not catalog.left_out and not catalog.ignored


def test_non_images_are_counted_by_kind_and_system_files_are_silent(tmp_path):
    write_image(tmp_path / "Cat" / "a.png")
    for name in ("notes.txt", "more.txt", "b.txt", "labels.csv", "index.db", "README"):
        (tmp_path / "Cat" / name).write_text("x")
    for name in (".DS_Store", "Thumbs.db", "desktop.ini", "._a.png"):
        (tmp_path / "Cat" / name).write_bytes(b"\0")
    (tmp_path / "Cat" / ".hidden.png").write_bytes(b"\0")
    (tmp_path / "Cat" / ".git").mkdir()
    (tmp_path / "Cat" / ".git" / "config").write_text("x")  # a hidden folder: silent
    catalog = scan(tmp_path)
    assert catalog.files == ["Cat/a.png"]
    assert dict(catalog.left_out) == {".txt": 3, ".csv": 1, ".db": 1, "no extension": 1,
                                      "hidden": 1}


# ---- links --------------------------------------------------------------------------------

def test_links_never_relabel_images(tmp_path):
    """The issue's folder: 10 rows, Cat 6 and Dog 4, one dangling file, one link reported."""
    root = tmp_path / "PetImages"
    pool = root / ".pool"
    for i in range(3):
        write_image(root / "Cat" / f"cat{i}.jpg", fmt="JPEG")
    for i in range(2):
        write_image(pool / "cats_more" / f"more{i}.jpg", fmt="JPEG")
    for i in range(4):
        write_image(pool / "dogs" / f"dog{i}.jpg", color=(0, 0, 200), fmt="JPEG")
    os.symlink("../.pool/cats_more", root / "Cat" / "more")
    os.symlink("../.pool/dogs/dog0.jpg", root / "Cat" / "borrowed.jpg")
    os.symlink("../.pool/nothing.jpg", root / "Cat" / "dangling.jpg")
    os.symlink("..", root / "Cat" / "loop")
    os.symlink(".pool/dogs", root / "Dog")
    catalog = scan(root)
    assert catalog.ignored == [("Cat/loop/", "not followed: leads to the dataset root")]
    assert "Cat/dangling.jpg" in catalog.files  # catalogued, then skipped as unreadable
    summary = extract_features(root, tmp_path / "f.h5", weights="none", model=FakeBackbone(),
                               progress=False, log=lambda line: None)
    assert (summary.rows, summary.class_counts) == (10, {"Cat": 6, "Dog": 4})
    assert [path for path, _ in summary.skipped] == ["Cat/dangling.jpg"]
    with open_store(tmp_path / "f.h5") as store:
        labels = dict(zip(store.paths, (store.classes[i] for i in store.labels), strict=True))
    assert labels["Cat/borrowed.jpg"] == "Cat"  # a file link: labelled where it sits
    assert not any(path.startswith("Cat/loop/") for path in labels)


def test_a_link_into_another_class_folder_is_not_followed(tmp_path):
    write_image(tmp_path / "Cat" / "a.png")
    write_image(tmp_path / "Dog" / "d.png")
    os.symlink("../Dog", tmp_path / "Cat" / "dogs")
    catalog = scan(tmp_path)
    assert catalog.files == ["Cat/a.png", "Dog/d.png"]
    path, why = catalog.ignored[0]
    assert path == "Cat/dogs/" and "inside another class folder" in why


def test_a_class_folder_linked_from_outside_and_linked_subfolders_are_kept(tmp_path):
    birds, more_cats = tmp_path / "birds", tmp_path / "more_cats"
    write_image(birds / "x.png")
    write_image(birds / "sub" / "y.png")
    write_image(more_cats / "sub" / "z.png")
    root = tmp_path / "data"
    write_image(root / "Cat" / "a.png")
    os.symlink(birds, root / "Bird")
    os.symlink(more_cats / "sub", root / "Cat" / "linked")
    catalog = scan(root)
    assert catalog.files == ["Bird/sub/y.png", "Bird/x.png", "Cat/a.png", "Cat/linked/z.png"]
    assert catalog.labels["Cat/linked/z.png"] == "Cat"
    assert catalog.ignored == []


# ---- refusals that name every cause -------------------------------------------------------

def test_images_only_at_the_top_level_are_counted_with_the_remedy(tmp_path):
    for name in ("cat.1001.jpg", "cat.1002.jpg", "dog.1001.jpg"):
        write_image(tmp_path / name, fmt="JPEG")
    with pytest.raises(FolderError) as error:
        scan(tmp_path)
    message = str(error.value)
    assert "No images found inside sub-folders" in message
    assert "3 images sit at its top level ('cat.1001.jpg'" in message
    assert "--labels-from-name" in message and "--unlabelled" in message


def test_class_names_equal_after_unicode_normalisation_are_named(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "Bär"), unicodedata.normalize("NFD", "Bär")
    write_image(tmp_path / nfc / "a.png")
    write_image(tmp_path / nfd / "b.png")
    catalog = scan(tmp_path)
    assert len(catalog.classes) == 2
    assert any(ascii(nfc) in n and ascii(nfd) in n and "NFC" in n for n in catalog.notices)


def test_class_names_that_differ_only_in_case_are_named_together(tmp_path):
    for name in ("Cat", "cat", "CAT", "Dog"):
        write_image(tmp_path / name / f"{name}.png")
    catalog = scan(tmp_path)
    assert sorted(catalog.classes) == ["CAT", "Cat", "Dog", "cat"]
    assert catalog.notices == ["class folders 'CAT', 'Cat' and 'cat' differ only in case; "
                               "they are stored as 3 separate classes: rename them to one "
                               "spelling to merge them"]


# ---- layouts --------------------------------------------------------------------------------

def tutorial(root, splits=("train", "validation"), classes=("cats", "dogs"), per=2):
    for split in splits:
        for cls in classes:
            for i in range(per):
                write_image(root / split / cls / f"{cls}.{i}.jpg", fmt="JPEG")
    return root


def test_tensorflow_tutorial_layout_gives_classes_and_given_splits(tmp_path):
    catalog = scan(tutorial(tmp_path / "cats_and_dogs_filtered"))
    assert catalog.classes == ["cats", "dogs"]
    assert catalog.label_source == "split folders"
    assert catalog.labels["train/cats/cats.0.jpg"] == "cats"
    assert catalog.splits["train/cats/cats.0.jpg"] == "train"
    assert catalog.splits["validation/dogs/dogs.1.jpg"] == "validation"


def test_train_val_test_any_case_and_a_missing_class_is_reported(tmp_path):
    root = tutorial(tmp_path / "data", splits=("TRAIN", "val"), classes=("Cat", "Dog"))
    tutorial(root, splits=("Testing",), classes=("Cat",))
    catalog = scan(root)
    assert catalog.classes == ["Cat", "Dog"]
    assert {catalog.splits[p] for p in catalog.files} == {"train", "validation", "test"}
    assert any("'Dog' has no images in the test split ('Testing/')" in n
               for n in catalog.notices)


def test_split_like_folders_without_class_folders_warn_with_the_command(tmp_path):
    for i in range(3):
        write_image(tmp_path / "train" / f"cat.{i}.jpg", fmt="JPEG")
    write_image(tmp_path / "test1" / "1.jpg", fmt="JPEG")
    catalog = scan(tmp_path)
    assert catalog.classes == ["test1", "train"]  # as asked, but never silently
    (notice,) = catalog.notices
    assert "'train/' holds 3 images directly inside, not class folders" in notice
    assert "--labels-from-name" in notice


def test_labels_from_a_kaggle_csv_with_ids_without_extension(tmp_path):
    for name in ("1.jpg", "2.jpg", "3.jpg", "nested/4.png", "5.jpg"):
        write_image(tmp_path / "images" / name, fmt="JPEG" if name.endswith("jpg") else None)
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("id,label\n1,cat\n2,dog\n3,cat\n4,dog\n99,cat\n")
    catalog = scan(tmp_path / "images", LabelSpec(csv=str(csv_file)))
    assert catalog.labels == {"1.jpg": "cat", "2.jpg": "dog", "3.jpg": "cat",
                              "nested/4.png": "dog"}
    assert catalog.classes == ["cat", "dog"]
    assert catalog.label_source.startswith("csv labels.csv (file column 'id', label column "
                                           "'label') sha256:")
    notices = " | ".join(catalog.notices)
    assert "left out 1 image without a row in 'labels.csv': '5.jpg'" in notices
    assert "1 row of 'labels.csv' without a file under" in notices and "'99'" in notices


def test_csv_without_header_and_with_named_columns(tmp_path):
    write_image(tmp_path / "imgs" / "a.jpg", fmt="JPEG")
    write_image(tmp_path / "imgs" / "b.jpg", fmt="JPEG")
    plain = tmp_path / "plain.csv"
    plain.write_text("a.jpg,Cat\nb.jpg,Dog\n")
    assert scan(tmp_path / "imgs", LabelSpec(csv=str(plain))).labels == {"a.jpg": "Cat",
                                                                        "b.jpg": "Dog"}
    named = tmp_path / "named.csv"
    named.write_text("breed;who;picture\nCat;x;a.jpg\nDog;y;b.jpg\n")
    spec = LabelSpec(csv=str(named), file_column="picture", label_column="breed")
    assert scan(tmp_path / "imgs", spec).labels == {"a.jpg": "Cat", "b.jpg": "Dog"}


def test_a_csv_that_labels_nothing_is_one_sentence(tmp_path):
    write_image(tmp_path / "imgs" / "a.jpg", fmt="JPEG")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\nzzz.jpg,Cat\n")
    with pytest.raises(LabelsError, match="No image under .* has a label in .*--file-column"):
        scan(tmp_path / "imgs", LabelSpec(csv=str(bad)))


def test_labels_from_file_names_kaggle_dogs_vs_cats(tmp_path):
    for name in ("cat.0.jpg", "cat.1.jpg", "dog.0.jpg", "readme.png"):
        write_image(tmp_path / "train" / name, fmt="JPEG" if name.endswith("jpg") else None)
    catalog = scan(tmp_path / "train", LabelSpec(regex=r"^(cat|dog)\."))
    assert catalog.labels == {"cat.0.jpg": "cat", "cat.1.jpg": "cat", "dog.0.jpg": "dog"}
    assert catalog.label_source == r"file names: ^(cat|dog)\."
    assert any("left out 1 image whose name --labels-from-name" in n and "'readme.png'" in n
               for n in catalog.notices)


def test_unlabelled_folder_lists_every_image(tmp_path):
    for i in range(3):
        write_image(tmp_path / "test1" / f"{i}.jpg", fmt="JPEG")
    write_image(tmp_path / "test1" / "sub" / "x.png")
    catalog = scan(tmp_path / "test1", LabelSpec(unlabelled=True))
    assert catalog.files == ["0.jpg", "1.jpg", "2.jpg", "sub/x.png"]
    assert catalog.classes == [] and set(catalog.labels.values()) == {None}
    assert not catalog.labelled


@pytest.mark.parametrize("spec, message", [
    (LabelSpec(csv="a.csv", regex="(x)"), "Choose one label source"),
    (LabelSpec(regex="no group"), "has no group"),
    (LabelSpec(regex="(unclosed"), "is not a valid regular expression"),
    (LabelSpec(csv="missing.csv"), "Label file 'missing.csv' does not exist"),
    (LabelSpec(file_column="x"), "go with --labels CSV"),
])
def test_label_options_are_checked_before_any_scan(tmp_path, spec, message):
    with pytest.raises(UsageError, match=message):
        scan(tmp_path / "not-even-there", spec)
