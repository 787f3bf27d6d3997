"""dataset_factory: validation, hashing, near-duplicate index, batch classification, routing.

Entry point: ``dataset_factory.run.process_inbox(config, store, progress=None)``.

validate  decode-check one file (draft JPEG decoding, bomb limit, EXIF, modes)
hashing   perceptual hashes as signed 64-bit ints, plus hard-edit views
hash_pool the worker pool running validate + hashing under time/memory bounds
index     the persistent XOR + popcount index of every kept image
verify    aligned thumbnail correlation that confirms hard-duplicate candidates
dedupe    duplicate decisions (which copy stays) and index/DB reconciliation
classify  the promoted model, batched through tf.data
run       chunks, routing, crash-safe moves through storage
review    a person's accept / relabel / reject decisions
"""
