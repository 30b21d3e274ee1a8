"""Train the small evaluation classifier: the same as `flextok-hf train-classifier ...`.

    python examples/train_classifier.py --output_dir runs/classifier

Defaults reproduce the shipped weights (`src/flextok_hf/pretrained/classifier/`): MNIST + Animal-MNIST as one 20-class
problem at 32x32. Every `transformers.TrainingArguments` flag works (`--num_train_epochs`, `--learning_rate`, ...).
"""

import sys

from flextok_hf.commands.train_classifier import main

if __name__ == "__main__":
    sys.exit(main())
