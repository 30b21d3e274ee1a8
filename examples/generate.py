"""Generate images with a trained FlexTok prior pipeline (what `flextok-hf generate` does, as plain Python).

python examples/generate.py runs/prior/pipeline "a cat" "a dog"       # text-to-image pipeline
python examples/generate.py runs/prior/pipeline cat 3 zebra            # class-to-image: names or ids
"""

import sys

import torch
from diffusers.utils import make_image_grid

from flextok_hf.pipeline_flextok_text2image import FlexTokClassToImagePipeline, load_generation_pipeline


def main(path: str, prompts: list[str], num_images: int = 4, out: str = "generated.png") -> None:
    pipe = load_generation_pipeline(path)  # FlexTokText2ImagePipeline or FlexTokClassToImagePipeline
    generator = torch.Generator().manual_seed(0)
    if isinstance(pipe, FlexTokClassToImagePipeline):
        print("classes:", pipe.id2label)
        labels = [int(p) if p.isdigit() and p not in pipe.labels else p for p in prompts]
        result = pipe(labels, num_images_per_label=num_images, generator=generator)
    else:
        result = pipe(prompts, num_images_per_prompt=num_images, generator=generator)
    make_image_grid(result.images, rows=len(prompts), cols=num_images).save(out)
    print(f"wrote {out}; first image's ids: {result.token_ids[0].tolist()}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
