//! IndirectionCloud plugin: builds a target image with the tools inside a utility image (work in progress).
