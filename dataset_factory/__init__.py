"""dataset_factory: validation, hashing, near-duplicate index, batch classification, routing.

Entry point: ``dataset_factory.run.process_inbox(config, store, progress=None)``.

hashing   perceptual hashes as signed 64-bit ints, plus hard-edit views
analyse   the worker pool running vision.decode + hashing under time/memory bounds
index     the persistent XOR + popcount index of every kept image
verify    aligned thumbnail correlation that confirms hard-duplicate candidates
dedupe    duplicate decisions (which copy stays) and index/DB reconciliation
classify  the promoted model (vision.model), batched through vision.pixels
run       chunks, routing, crash-safe moves through storage
review    a person's accept / relabel / reject decisions
"""
