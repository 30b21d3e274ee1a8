"""`flextok-hf train-prior`: train the autoregressive prior (stage 2) on pre-tokenized FlexTok ids.

```
flextok-hf pretokenize --model runs/mnist32 --dataset mnist,animal_mnist --split train,test --output-dir data/ids
flextok-hf train-prior --dataset data/ids --output_dir runs/prior --condition_type class --preset tiny \
    --flextok runs/mnist32 --max_steps 2000
flextok-hf generate cat 3 --model runs/prior/pipeline --out grid.png
```

Every flag of `flextok_hf.training.prior.parse_prior_args` is accepted (`flextok-hf train-prior --help`); the
training itself is `flextok_hf.training.prior.train_prior_from_args`.
"""

from . import register_trainer_command


def register(subparsers):
    register_trainer_command(
        subparsers,
        "train-prior",
        help="Train the autoregressive prior (class- or text-conditional) on pre-tokenized ids with Trainer.",
        module="training.prior",
    )
