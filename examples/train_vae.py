"""Train a small VAE (FlexTok stage 0); a thin wrapper around `flextok_hf.training.vae.train_vae`.

    OMP_NUM_THREADS=1 python examples/train_vae.py --dataset mnist --image_size 32 --block_out_channels 32,64,64 \
        --latent_channels 4 --max_steps 1500 --per_device_train_batch_size 32 --output_dir runs/vae_mnist32
    flextok-hf train-tokenizer --config tiny --image_size 32 --patch_size 2 --vae_name_or_path runs/vae_mnist32 ...

The output folder is a diffusers `AutoencoderKL` (`AutoencoderKL.from_pretrained(folder)`) whose config's
`scaling_factor` is 1 / std of its latents on the training images; `train-tokenizer --vae_name_or_path` uses it as
`vae_scaling_factor`. `python examples/train_vae.py --help` lists every flag.
"""

import sys

from flextok_hf.training.vae import main

if __name__ == "__main__":
    sys.exit(main())
