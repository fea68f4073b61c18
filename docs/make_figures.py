"""Makes the pictures of docs/how-it-works.md with keras_stn itself.

    python docs/make_figures.py

Writes docs/img/*.png (committed). Uses the bundled offline digits; no download,
no training, about ten seconds.
"""

import os

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from keras_stn import datasets  # noqa: E402
from keras_stn import ops  # noqa: E402
from keras_stn import transforms  # noqa: E402
from keras_stn import visualize  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
IMG = os.path.join(HERE, "img")


def undo_placement_theta(angle, scale, position, canvas=42, digit=28):
    """The affine theta whose grid reads, from the canvas, the 28x28 digit that
    `datasets.place(digit, angle, scale, position, canvas)` put there: the
    transform a trained RTS transformer should find."""
    radians = np.deg2rad(angle)
    # Shown with y down, counter-clockwise by `angle` is [[cos, sin], [-sin, cos]].
    rotation = np.array([[np.cos(radians), np.sin(radians)], [-np.sin(radians), np.cos(radians)]])
    linear = (digit / canvas) * scale * rotation
    shift = (np.asarray(position) - (canvas - 1) / 2) / (canvas / 2)
    return np.concatenate([linear[0], shift[:1], linear[1], shift[1:]]).astype("float32")


def three_parts(digits):
    """Input with the sampling grid over it, and the output: an RTS digit undone."""
    params = [
        (30.0, 1.1, (16.0, 22.0)),
        (-40.0, 0.8, (27.0, 14.0)),
        (10.0, 0.7, (12.0, 29.0)),
        (-20.0, 1.2, (22.0, 21.0)),
    ]
    inputs = np.concatenate(
        [
            np.asarray(datasets.place(d[None], a, s, p, canvas_size=42))
            for d, (a, s, p) in zip(digits, params)
        ]
    )
    theta = np.stack([undo_placement_theta(a, s, p) for a, s, p in params])
    grid = ops.affine_grid(theta, (28, 28))
    outputs = np.asarray(ops.sample(inputs, grid))
    visualize.plot_sampling_grid(
        inputs,
        np.asarray(grid),
        columns=4,
        scale=1.5,
        path=os.path.join(IMG, "three-parts-grid.png"),
    )
    visualize.plot_transformed(
        inputs, outputs, columns=4, scale=1.1, path=os.path.join(IMG, "three-parts-output.png")
    )


def conventions():
    """The same 3x3 identity grid over a 6x6 image under both conventions."""
    image = (np.indices((6, 6)).sum(0) % 2).astype("float32")[None, :, :, None] * 0.5 + 0.25
    identity = np.array([[1, 0, 0, 0, 1, 0]], "float32")
    for align_corners in (False, True):
        grid = np.asarray(ops.affine_grid(identity, (3, 3), align_corners=align_corners))
        name = (
            "conventions-align-corners-true.png"
            if align_corners
            else "conventions-align-corners-false.png"
        )
        visualize.plot_sampling_grid(
            image,
            grid,
            step=1,
            align_corners=align_corners,
            scale=2.0,
            explain=False,  # The page says what these show.
            path=os.path.join(IMG, name),
        )


def families(digit):
    """One digit read along an affine, a projective and a TPS grid."""
    rng = np.random.default_rng(4)
    inputs = np.repeat(digit[None], 3, axis=0)
    thetas = {
        "affine": np.array([[0.8, 0.3, 0.05, -0.2, 0.9, 0.0]], "float32"),
        "projective": np.array([[0.9, 0.1, 0.0, 0.0, 0.9, 0.0, 0.25, 0.2]], "float32"),
        "tps": (transforms.TPS().identity() + rng.normal(0, 0.12, 32)).astype("float32")[None],
    }
    grids = [
        np.asarray(family.grid(theta, (28, 28)))
        for family, theta in zip(
            [transforms.get("affine"), transforms.Projective("matrix"), transforms.get("tps")],
            thetas.values(),
        )
    ]
    grid = np.concatenate(grids)
    outputs = np.asarray(ops.sample(inputs, grid))
    visualize.plot_sampling_grid(
        inputs,
        grid,
        columns=3,
        scale=1.6,
        titles=list(thetas),
        path=os.path.join(IMG, "families-grid.png"),
    )
    visualize.plot_images(
        outputs,
        columns=3,
        titles=list(thetas),
        scale=1.6,
        path=os.path.join(IMG, "families-output.png"),
    )


def variants():
    """The five distorted-MNIST variants, six test digits each."""
    rows, titles = [], []
    for variant in datasets.VARIANTS:
        data = datasets.distorted_mnist(
            variant, "test", source="bundled", num_digits=6, verbose=False
        )
        for image, _ in data:
            # Shown at one size: the 28x28 variants are padded onto a 60x60 canvas.
            pad = (60 - image.shape[0]) // 2
            rows.append(np.pad(image.numpy(), ((pad, pad), (pad, pad), (0, 0))))
            titles.append(f"{variant}" if len(titles) % 6 == 0 else "")
    visualize.plot_images(
        np.stack(rows), columns=6, titles=titles, scale=1.1, path=os.path.join(IMG, "variants.png")
    )


def tiles(digits):
    """Where several transformers start with `TransformTiles`: one 56x56 image of four
    digits, the regions read by N transformers of a few families."""
    from matplotlib.figure import Figure

    canvas = np.zeros((56, 56), "float32")
    for k, digit in enumerate(digits[:4]):
        row, column = divmod(k, 2)
        canvas[28 * row : 28 * row + 28, 28 * column : 28 * column + 28] = digit
    cases = [("affine", 2), ("affine", 4), ("attention", 2), ("attention", 3), ("tps", 4)]
    colours = ("tab:orange", "tab:blue", "tab:green", "tab:red")
    figure = Figure(figsize=(len(cases) * 1.6, 1.9))
    for index, (name, count) in enumerate(cases):
        family = transforms.get(name)
        theta = transforms.tile_parameters(family, count).astype("float32")
        # The outline joins the centres of the outer output pixels: just inside the region.
        grid = np.asarray(family.grid(theta, (8, 8)))
        axes = figure.add_subplot(1, len(cases), index + 1)
        axes.imshow(canvas, cmap="gray", vmin=0, vmax=1)
        for k in range(count):
            edge = np.concatenate([grid[k, 0], grid[k, :, -1], grid[k, -1, ::-1], grid[k, ::-1, 0]])
            points = visualize.grid_to_pixels(edge, (56, 56))
            axes.plot(points[:, 0], points[:, 1], color=colours[k], linewidth=1.5)
            centre = visualize.grid_to_pixels(grid[k].mean(axis=(0, 1)), (56, 56))
            axes.text(*centre, str(k), color=colours[k], fontsize=9, ha="center", va="center")
        axes.set_xlim(-0.5, 55.5)
        axes.set_ylim(55.5, -0.5)
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_title(f"{name}, {count}", fontsize=8)
    figure.tight_layout()
    figure.savefig(os.path.join(IMG, "tiles.png"), dpi=90)


def main():
    os.makedirs(IMG, exist_ok=True)
    digits = datasets.load_digits("test", source="bundled").images[:4].astype("float32") / 255.0
    three_parts(digits[..., None])
    conventions()
    families(digits[2, :, :, None])
    variants()
    tiles(digits)
    for name in sorted(os.listdir(IMG)):
        # Those come from the examples' runs.
        if not name.startswith(("reproduction-", "co-localisation-")):
            shrink(os.path.join(IMG, name))
        print(os.path.join("docs", "img", name), os.path.getsize(os.path.join(IMG, name)), "bytes")


def shrink(path, colors=64):
    """Saves a PNG with a 64-colour palette: a third of the size, the same to the eye."""
    from PIL import Image  # Pillow comes with matplotlib.

    image = Image.open(path).convert("RGB")
    image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


if __name__ == "__main__":
    main()
