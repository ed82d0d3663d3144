//! Shared by the Fedora and RHEL OS plugins: kickstarts, install trees, ISO remastering (work in progress).
