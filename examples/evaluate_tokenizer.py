"""Rate-distortion evaluation of a saved FlexTok model: the same as `flextok-hf evaluate ...`.

    python examples/evaluate_tokenizer.py --model runs/tokenizer --dataset mnist --num-samples 256 --linear-probe \
        --output-dir runs/tokenizer/eval

Writes rate_distortion.json, rate_distortion.md and rate_distortion.png (PSNR, MAE, SSIM, a Fréchet distance in the
shipped classifier's feature space - not FID - and the classifier's accuracy on the reconstructions, per token budget).
"""

import sys

from flextok_hf.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
