"""The imgfs test images: built with real tools (umoci, skopeo) and hand-made tar
streams, pushed to the test registry and unpacked as reference trees. The command is
scripts/build-test-images; its header says what it writes. build.main runs it all.
"""



