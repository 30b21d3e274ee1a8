"""Train a FlexTok tokenizer (stage 1); a thin wrapper around `flextok_hf.training.train_tokenizer`.

    python examples/train_tokenizer.py --config cpu_32px --dataset mnist --output_dir runs/mnist32 --max_steps 3000
    torchrun --standalone --nproc_per_node 2 examples/train_tokenizer.py --config tiny --dataset digits ...

`python examples/train_tokenizer.py --help` lists every flag; launch lines for DDP / FSDP are in
`flextok_hf.training.tokenizer.LAUNCH_DOCS`.
"""

import sys

from flextok_hf.training.tokenizer import main

if __name__ == "__main__":
    sys.exit(main())
