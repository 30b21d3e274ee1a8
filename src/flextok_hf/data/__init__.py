"""Real image datasets as `datasets.Dataset`, built offline from data that ships inside installed packages.

```python
from flextok_hf.data import available_datasets, load_image_dataset

available_datasets()                                  # {"mnist": "...", "animal_mnist": ..., ...}
train = load_image_dataset("mnist")                   # 4,500 rows: image (28x28 "L"), label, caption, id
test = load_image_dataset("emoji", split="test")      # 128x128 RGB emoji with CLDR-name captions
photos = load_image_dataset("skimage", split="all")   # 11 colour photos (every split returns all of them)
folder = load_image_dataset("/path/to/images")        # imagefolder; metadata.csv may add a caption column
```

Bundled sets, their sources and sizes are listed in `bundled.py`; caching and splits are described in `loading.py`;
the emoji renderer in `emoji_render.py`. `sample_images()` returns a few ready-to-use images for demos.
"""

from .bundled import BUNDLED_DATASETS, BundledDataset
from .loading import available_datasets, default_cache_dir, load_image_dataset
from .samples import sample_images

__all__ = [
    "BUNDLED_DATASETS",
    "BundledDataset",
    "available_datasets",
    "default_cache_dir",
    "load_image_dataset",
    "sample_images",
]
