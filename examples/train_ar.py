"""Train the FlexTok autoregressive prior (stage 2); a thin wrapper around `flextok-hf train-prior`.

First tokenize a dataset once with a trained FlexTok, then train a class- or text-conditional prior on the ids:

    flextok-hf pretokenize --model runs/mnist32 --dataset mnist,animal_mnist --split train,test --output-dir data/ids
    python examples/train_ar.py --dataset data/ids --output_dir runs/prior --condition_type class --preset tiny \
        --flextok runs/mnist32 --max_steps 2000
    torchrun --standalone --nproc_per_node 2 examples/train_ar.py --dataset data/ids ...   # CPU DDP (gloo)

`python examples/train_ar.py --help` lists every flag (prior size overrides, data splits, pipeline defaults and all of
`transformers.TrainingArguments`). With `--flextok`, `<output_dir>/pipeline` is a ready generation pipeline
(see examples/generate.py).
"""

import sys

from flextok_hf.training.prior import main

if __name__ == "__main__":
    sys.exit(main())
