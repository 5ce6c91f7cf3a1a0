"""The one definition of what a Fashion-MNIST model sees.

Training, conversion and the device all import from here, so the pixels the
model learned on are the pixels it gets on a Raspberry Pi.

The contract is deliberately trivial: a model input is a 28x28 single-channel
image of raw 0..255 intensities, garment bright on a black background, exactly
as stored in the IDX files. Every model does its own scaling (a Rescaling
layer inside the network), so no caller ever divides by 255, and the int8
model's uint8 input takes those pixels unchanged (scale 1, zero point 0).

Turning a camera frame or a photo into such an image is `edge_runtime.photo`;
this module only says what the result must look like.
"""

from __future__ import annotations

# Class names in label order, as published with the dataset (Xiao et al. 2017).
# Training writes them into the model's metadata; the runtime reads them from
# there and never from this list, so a model trained on other labels still works.
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

IMAGE_HEIGHT = 28
IMAGE_WIDTH = 28
IMAGE_CHANNELS = 1
# Shape of one model input, NHWC without the batch axis.
INPUT_SHAPE = (IMAGE_HEIGHT, IMAGE_WIDTH, IMAGE_CHANNELS)

# Models multiply their raw 0..255 input by this first thing (inside the graph).
PIXEL_SCALE = 1.0 / 255.0

# Name and version of the contract, recorded in every model's metadata so the
# runtime can refuse a model that expects something else.
CONTRACT = "raw-uint8-28x28-bright-on-black/1"
