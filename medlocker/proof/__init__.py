"""Ownership proofs: show that a leaked image came from a packing run.

The signed index of every shard publishes, per sample, a salted commitment to
its watermark parameters. The owner keeps the plain parameters and salts. To
claim a suspect image -- which a re-poster may have cropped (up to about 10 % per
side), rotated (a few degrees), rescaled and re-encoded -- the owner

1. finds the published sample it derives from: every published image is
   registered coarsely against the suspect (:mod:`.register`), and the best
   candidates are registered finely (ECC) and scored;
2. scores, in the published frame, whether the suspect *is* that image (fine
   detail, :func:`.match.image_similarity`) and carries *that* sample's logo at
   *that* placement (:func:`.match.watermark_score`, which needs the original and
   so only the owner can compute it); and
3. reveals the parameters and the salt that open the signed commitment, with the
   SHA-256 of the suspect file.

Anyone with the owner's public key and the published dataset can check the
proof (:func:`check_proof`): the manifest signature, the index digest and the
commitment opening. That alone shows only that the revealed parameters are the
signed ones of the named sample, never that an image is that sample. Given the
suspect image, ``check_proof`` also checks its digest against the proof and
registers and compares it with the published sample.

The edit model the match thresholds are calibrated against is :func:`repost`.
"""

from __future__ import annotations

from .core import Proof, ProofCheck, check_proof, decode_suspect, prove
from .document import PROOF_FORMAT, PROOF_VERSION
from .edits import Repost, repost
from .match import THRESHOLDS, Thresholds

__all__ = [
           "PROOF_FORMAT",
           "PROOF_VERSION",
           "THRESHOLDS",
           "Proof",
           "ProofCheck",
           "Repost",
           "Thresholds",
           "check_proof",
           "decode_suspect",
           "prove",
           "repost",
]
