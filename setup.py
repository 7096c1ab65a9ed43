"""sam_d2: Segment Anything as a Detectron2 plugin."""
from setuptools import find_packages, setup

setup(
    name="sam_d2",
    version="0.1.0",
    description="Segment Anything (SAM) as a first-class Detectron2 plugin",
    packages=find_packages(include=["sam_d2", "sam_d2.*", "sam_d2_onnx"]),
    package_data={"sam_d2.annotate": ["static/*"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "numpy",
        "opencv-python-headless",
        "scipy",
        "scikit-image",
        "tifffile",
        "pycocotools",
        "faster-coco-eval",
        "lvis",
        "tqdm",
        "h5py",
        "tensorboard",
        "matplotlib",
        # ONNX export (dynamo exporter needs onnxscript) and the torch-free predictor sam_d2_onnx
        "onnx",
        "onnxscript",
        "onnxruntime",
        # the annotation app (sam_d2/annotate, tools/annotate.py)
        "fastapi",
        "uvicorn",
    ],
    extras_require={
        # httpx: FastAPI's TestClient; playwright: the annotation browser test (system chromium)
        "dev": [
            "pytest",
            "segment-anything==1.0",
            "ruff",
            "httpx",
            "playwright",
            # reference oracles of the SAM-family parity tests (never imported by sam_d2)
            "segment-anything-hq==0.3",
            "mobilesam-mirror==1.0.0",
            # pyEdgeEval's original BSDS matcher and edge NMS: reference of the BSDS tests and
            # tools/benchmark_edges.py only (sam_d2's own matcher is exact)
            "pyedgeeval",
        ],
    },
)
