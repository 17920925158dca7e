"""``nnscratch predict`` and :mod:`nnscratch.data.handwriting`: your own drawings, prepared as MNIST's were.

* Geometry: digits drawn with Pillow (thick and thin strokes, small and large canvases, off-centre,
  both polarities, RGBA on a transparent canvas, JPEG artefacts, paper texture with a speck of dust)
  come out as white-on-black 28x28 images whose ink's bounding box is 20 pixels on its longer side,
  whose aspect ratio is kept and whose centre of mass is within half a pixel of (14, 14).
* A small MLP trained here on 5,000 MNIST images reads clearly drawn 1, 0 and 7s, and keeps its
  prediction for >= 90 % of MNIST's own test images passed through the preparation.
* Bad inputs: one line on stderr, exit 2.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import assert_one_line_error, cli_env, optional_import, run_cli  # noqa: E402

from nnscratch.data.handwriting import NoInkError, input_shape, mnist_style, prepare_for_model  # noqa: E402
from nnscratch.errors import UsageError  # noqa: E402


# --- drawings ----------------------------------------------------------------------------------


def draw(digit: str, size=(400, 300), width=24, centre=(0.5, 0.5), height=0.7, light_on_dark=False) -> Image.Image:
    """A grey canvas with ``digit`` ("1": a vertical bar, "0": a ring, "7": a bar and a diagonal)
    drawn ``height`` of the canvas tall around ``centre`` (fractions of the canvas), in strokes
    ``width`` pixels wide; black on white, or white on black."""
    w, h = size
    paper, ink = (0, 255) if light_on_dark else (255, 0)
    img = Image.new("L", size, paper)
    d = ImageDraw.Draw(img)
    cx, cy, half = centre[0] * w, centre[1] * h, height * min(w, h) / 2
    if digit == "1":
        d.line([(cx, cy - half), (cx, cy + half)], fill=ink, width=width)
    elif digit == "0":
        d.ellipse([cx - 0.7 * half, cy - half, cx + 0.7 * half, cy + half], outline=ink, width=width)
    elif digit == "7":
        d.line([(cx - 0.6 * half, cy - half), (cx + 0.6 * half, cy - half), (cx - 0.1 * half, cy + half)],
               fill=ink, width=width, joint="curve")
    return img


def jpeg(img: Image.Image, quality=25) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def rgba_on_transparent(img: Image.Image) -> Image.Image:
    """The dark strokes of a black-on-white drawing, on a fully transparent canvas (as drawing apps save)."""
    alpha = 255 - np.asarray(img.convert("L"))
    rgba = np.zeros((*alpha.shape, 4), dtype=np.uint8)  # transparent black: only alpha says where ink is
    rgba[..., 3] = alpha
    return Image.fromarray(rgba, "RGBA")


def textured(img: Image.Image, seed=0) -> Image.Image:
    """Greyish paper with texture (+-12 grey levels) and a 3x3 speck of dust in a corner."""
    rng = np.random.default_rng(seed)
    g = np.asarray(img.convert("L"), dtype=np.float64) * 0.8 + 30  # paper at 234, ink at 30
    g += rng.uniform(-12, 12, g.shape)
    g[5:8, 5:8] = 40
    return Image.fromarray(np.clip(g, 0, 255).astype(np.uint8), "L")


DRAWINGS = {
    "thick 1": lambda: draw("1", width=40),
    "thin 0 on a large canvas": lambda: draw("0", size=(1200, 900), width=3),
    "7 on a small canvas": lambda: draw("7", size=(40, 30), width=3),
    "0 in a corner": lambda: draw("0", size=(500, 500), centre=(0.2, 0.25), height=0.3),
    "wide 0 light on dark": lambda: draw("0", size=(300, 600), light_on_dark=True),
    "7 light on dark": lambda: draw("7", light_on_dark=True),
    "RGBA on transparency": lambda: rgba_on_transparent(draw("7", size=(256, 256), width=12)),
    "JPEG artefacts": lambda: jpeg(draw("0", size=(200, 240), width=10)),
    "textured paper with dust": lambda: textured(draw("1", size=(300, 300), width=16)),
}


def ink_box(a: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    a = a.astype(np.float64)
    rows, cols = np.indices(a.shape)
    return (rows * a).sum() / a.sum(), (cols * a).sum() / a.sum()


@pytest.mark.parametrize("name", list(DRAWINGS))
def test_drawings_become_mnist_shaped(name):
    out = mnist_style(DRAWINGS[name]())
    assert out.dtype == np.uint8 and out.shape == (28, 28)
    assert out.max() == 255
    assert max(ink_box(out)) == 20  # fitted into 20x20, longer side 20
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 0.5 + 1e-9 and abs(cx - 14) <= 0.5 + 1e-9, (cy, cx)
    assert out[0].max() == out[-1].max() == out[:, 0].max() == out[:, -1].max() == 0  # black paper all round


def test_aspect_ratio_is_kept():
    tall = mnist_style(draw("0", size=(400, 400), width=10))  # a ring 0.7 : 1 wide : tall
    h, w = ink_box(tall)
    assert h == 20 and abs(w - 14) <= 1, (h, w)
    bar = mnist_style(draw("1", size=(400, 400), width=20))  # 20 x 280 pixels: a bar 1 to 2 pixels wide
    assert ink_box(bar)[1] <= 3


def test_polarity_and_alpha_do_not_change_the_result():
    dark_on_light = mnist_style(draw("7"))
    assert np.array_equal(dark_on_light, mnist_style(draw("7", light_on_dark=True)))
    assert np.array_equal(mnist_style(draw("7", size=(256, 256), width=12)),
                          mnist_style(rgba_on_transparent(draw("7", size=(256, 256), width=12))))


def test_a_speck_of_dust_does_not_move_the_digit():
    clean = mnist_style(draw("1", size=(300, 300), width=16))
    dusty = mnist_style(textured(draw("1", size=(300, 300), width=16)))
    assert ink_box(dusty) == ink_box(clean)  # the box is the digit's, not the dust's
    assert np.abs(dusty.astype(int) - clean.astype(int)).mean() < 8  # texture gone too, nearly


def test_a_blank_page_has_no_ink():
    rng = np.random.default_rng(1)
    for page in (np.full((100, 80), 255), 200 + rng.uniform(-10, 10, (300, 300)), np.zeros((28, 28))):
        with pytest.raises(NoInkError, match="no ink"):
            mnist_style(page, source="page.png")


def test_a_thin_pen_on_a_photo_sized_canvas_fits_in_memory(tmp_path):
    """A 3-pixel pen on 4032x3024 (a phone photo) needs a disc of radius ~100 to thicken: the ink is
    max-pooled first (module docstring, step 4), so it is prepared in seconds and under a 1 GB cap
    (a 401x401 dilation of the full crop took 14 GB and a minute), and still reads as a ring."""
    from memcap import run_capped

    path, out = tmp_path / "photo.png", tmp_path / "prepared.npy"
    draw("0", size=(4032, 3024), width=3).save(path)
    error, message = run_capped(f"numpy.save({str(out)!r}, mnist_style(read_image({str(path)!r})))",
                                "import numpy\nfrom nnscratch.data.handwriting import mnist_style, read_image",
                                tmp_path)
    assert error is None, message
    ring = np.load(out)
    assert ring.shape == (28, 28) and max(ink_box(ring)) == 20
    assert abs(ink_box(ring)[1] - 14) <= 1  # the ring's aspect ratio, 0.7 : 1
    assert ring[12:17, 12:17].max() == 0 and (ring >= 128).sum() >= 40  # hollow, strokes MNIST-thick


def test_input_shape_from_what_a_model_stores():
    assert input_shape(784, "mnist") == (28, 28, 1)
    assert input_shape(3072, "cifar10") == (32, 32, 3)
    assert input_shape(196, "mnist", {"image_size": [14, 14]}) == (14, 14, 1)
    assert input_shape(2352, "mnist", {"color": "rgb"}) == (28, 28, 3)
    assert input_shape(48, "folder:/x", {}, {"mean": [0.5] * 3, "std": [1] * 3}) == (4, 4, 3)
    assert input_shape(64, "npz:/x") == (8, 8, 1)
    assert input_shape(30, "csv:/x", {"image_shape": "5x6"}) == (5, 6, 1)
    with pytest.raises(UsageError, match="image shape"):
        input_shape(64, "mnist")


def test_other_datasets_are_only_resized():
    rgb = Image.new("RGB", (100, 50), (255, 0, 0))
    out = prepare_for_model(rgb, "cifar10", (32, 32, 3))
    assert out.shape == (32, 32, 3) and (out == [255, 0, 0]).all()
    grey = prepare_for_model(rgb, "fashion-mnist", (28, 28, 1))
    assert grey.shape == (28, 28, 1) and (grey == 76).all()  # Pillow's L of pure red, not inverted


# --- a trained model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory, mnist):
    """A 784-64-10 MLP trained on 5,000 MNIST images for 2 epochs (Adam): ~90 % test accuracy."""
    from nnscratch import api

    out = tmp_path_factory.mktemp("predict-run") / "run"
    run = api.train(engine="numpy", data=mnist, train_subset=5000, epochs=2, hidden=[64], optimizer="adam",
                    lr=0.001, out=out)
    assert run.metrics["engines"]["numpy"]["test"]["accuracy"] > 0.85
    return run, out / "numpy_model.safetensors"


CLEAR_DIGITS = {
    "one_bar.png": ("1", lambda: draw("1", width=30)),
    "one_thin_large.png": ("1", lambda: draw("1", size=(900, 900), width=4, centre=(0.3, 0.6))),
    "zero_ring.png": ("0", lambda: draw("0", size=(300, 300), width=14)),
    "zero_light_on_dark.jpg": ("0", lambda: jpeg(draw("0", size=(300, 300), width=14, light_on_dark=True))),
    "seven.png": ("7", lambda: draw("7", width=20)),
    "seven_small.bmp": ("7", lambda: draw("7", size=(60, 60), width=5)),
    "seven_rgba.png": ("7", lambda: rgba_on_transparent(draw("7", size=(256, 256), width=12))),
}


def write_digits(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (_, make) in CLEAR_DIGITS.items():
        make().save(folder / name)
    return {str(folder / name): digit for name, (digit, _) in CLEAR_DIGITS.items()}


def test_the_model_reads_clearly_drawn_digits(model, tmp_path):
    _, path = model
    expected = write_digits(tmp_path / "digits")
    result = run_cli(["predict", str(tmp_path / "digits"), "--model", str(path), "--json"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)  # stdout is the JSON and nothing else
    assert sorted(a["file"] for a in answers) == sorted(expected)
    for a in answers:
        assert len(a["top"]) == 3
        probabilities = [p for _, p in a["top"]]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
        assert a["top"][0][0] == expected[a["file"]], a


def test_human_output_and_show(model, tmp_path):
    _, path = model
    expected = write_digits(tmp_path / "digits")
    files = sorted(expected)[:2]
    result = run_cli(["predict", *files, "--model", str(path), "--show", str(tmp_path / "seen")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "784-64-10" in lines[0] and "mnist" in lines[0]
    for file in files:
        line = next(x for x in lines if x.startswith(f"{file}: "))
        assert line.split(": ")[1].split()[0] == expected[file]  # the top class first
        assert line.count(", ") == 2  # three classes
        picture = Image.open(tmp_path / "seen" / f"{Path(file).stem}.png")
        assert picture.height == 280 and picture.width > 280 + 280
        seen = np.asarray(picture.convert("L"))[:, -280:][5::10, 5::10]  # one sample per input pixel
        assert np.array_equal(seen, mnist_style(Image.open(file)))
    assert sorted(p.name for p in (tmp_path / "seen").iterdir()) == sorted(f"{Path(f).stem}.png" for f in files)


def test_torch_runs_the_same_model(model, tmp_path):
    optional_import("torch")
    _, path = model
    expected = write_digits(tmp_path / "digits")
    answers = {}
    for engine in ("numpy", "torch"):
        result = run_cli(["predict", str(tmp_path / "digits"), "--model", str(path), "--json", "--engine", engine],
                         cwd=tmp_path, env=cli_env(CUDA_VISIBLE_DEVICES=""))
        assert result.returncode == 0, result.stderr
        answers[engine] = {a["file"]: a["top"] for a in json.loads(result.stdout)}
    for file in expected:
        assert [c for c, _ in answers["torch"][file]] == [c for c, _ in answers["numpy"][file]]
        assert np.allclose([p for _, p in answers["torch"][file]], [p for _, p in answers["numpy"][file]], atol=1e-4)


def test_mnist_images_pass_through_nearly_unchanged(model, mnist):
    run, _ = model
    images = mnist.test_images[:1000]
    prepared = np.stack([mnist_style(im[..., 0]) for im in images])[..., np.newaxis]
    before, after = run.predict_classes(images), run.predict_classes(prepared)
    assert (before == after).mean() >= 0.9
    assert np.abs(prepared.astype(int) - images.astype(int)).mean() < 12  # grey levels, of 255


# --- bad inputs --------------------------------------------------------------------------------


def _huge_bmp(path: Path) -> None:
    """A BMP whose header declares 100,000 x 100,000 pixels, holding 4x4: refused from the header."""
    buf = io.BytesIO()
    Image.new("L", (4, 4), 255).save(buf, format="BMP")
    data = bytearray(buf.getvalue())
    data[18:22] = (100_000).to_bytes(4, "little")
    data[22:26] = (100_000).to_bytes(4, "little")
    path.write_bytes(bytes(data))


def test_bad_inputs_are_one_line(model, tmp_path):
    _, path = model
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    Image.new("L", (200, 200), 250).save(tmp_path / "blank.png")
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "readme.txt").write_text("hi")
    _huge_bmp(tmp_path / "huge.bmp")
    (tmp_path / "fake.safetensors").write_bytes(b"\x00" * 64)
    draw("1").save(tmp_path / "one.png")
    model_flag = ["--model", str(path)]
    cases = [
        (["notes.png", *model_flag], "cannot read the image"),
        (["empty.png", *model_flag], "empty (0 bytes)"),
        (["blank.png", *model_flag], "no ink found"),
        (["missing.png", *model_flag], "no such file"),
        (["no_images", *model_flag], "no images"),
        (["huge.bmp", *model_flag], "100,000x100,000 pixels, above the limit"),
        (["one.png", "--model", "fake.safetensors"], "fake.safetensors"),
        (["one.png", *model_flag, "--show", "one.png"], "--show one.png is a file"),
    ]
    for args, message in cases:
        result = run_cli(["predict", *args, "--json"], cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        line = assert_one_line_error(result.stderr, result.stdout)
        assert message in line, (args, line)
        assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["notes.png", "empty.png", "blank.png", "no_images", "huge.bmp", "fake.safetensors", "one.png"])


def test_models_of_other_datasets_name_their_classes(tmp_path):
    from nnscratch.data import DATASETS
    from nnscratch.files.model_files import save_model
    from nnscratch.model.registry import initial_state
    from nnscratch.model.spec import mlp_spec

    draw("7").save(tmp_path / "seven.png")
    for dataset, inputs, names in (("cifar10", 3072, DATASETS["cifar10"].class_names),
                                   ("npz:/elsewhere/data.npz", 64, [str(k) for k in range(10)])):
        spec = mlp_spec(input_dim=inputs, hidden=(8,), num_classes=10)
        path = tmp_path / f"{inputs}.safetensors"
        save_model(path, initial_state(spec, np.random.default_rng(0)), spec, engine="numpy", dtype="float32",
                   dataset=dataset)
        result = run_cli(["predict", "seven.png", "--model", str(path), "--json"], cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        top = json.loads(result.stdout)[0]["top"]
        assert len(top) == 3 and all(name in names for name, _ in top)
