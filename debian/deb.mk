# Debian packages (included by the Makefile).
#   make deb           builds libapache2-mod-krenalis-auth and krenalis-keys into build/deb/
#   make lintian       checks them (fails on any lintian error or warning)
#   make package-test  installs them on this machine's own Apache and removes them again
#                      (tests/package/run.py; root)
# `make test` runs lintian and package-test. The packages are built by dpkg-buildpackage in a
# copy of the tree under build/deb-src/, so that its `debian/rules clean` cannot touch this
# tree's build/ and the files it writes beside the source (.changes, .buildinfo) stay in
# build/; the .debs are moved to build/deb/.
DEB_PKGS := build-essential debhelper dpkg-dev apache2-dev lintian libapr1-dev libaprutil1-dev \
            libjson-c-dev liblmdb-dev libpq-dev libssl-dev zlib1g-dev
KA_VERSION := $(shell sed -n 's/^\#define KA_VERSION "\(.*\)"$$/\1/p' src/version.h)
DEB_OUT := $(BUILD)/deb
DEB_WORK := $(BUILD)/deb-src

.PHONY: deb lintian package-test
TEST_TARGETS += lintian package-test

# krenalis-keys(1), written by hand in docs/krenalis-keys.1; refused when its COMMANDS do not
# list exactly the synopses that `krenalis-keys --help` prints.
$(BUILD)/krenalis-keys.1: docs/krenalis-keys.1 $(BUILD)/krenalis-keys
	@./$(BUILD)/krenalis-keys --help | sed -n '/^commands:/,/^$$/s/^  //p' | sort >$@.help
	@sed -n '/^\.SH COMMANDS/,/^\.SH [^C]/{/^\.TP/{n;p;}}' $< | sed 's/\\f[BIRP]//g; s/\\-/-/g' \
	  | sort >$@.man
	@diff -u --label "krenalis-keys --help" --label "$< COMMANDS" $@.help $@.man || { \
	  echo "$<: its COMMANDS do not match krenalis-keys --help" >&2; rm -f $@.help $@.man; exit 1; }
	@rm -f $@.help $@.man
	install -m 0644 $< $@

deb:
	$(call apt_install,$(DEB_PKGS))
	@v=$$(dpkg-parsechangelog -l debian/changelog -S Version); [ "$$v" = "$(KA_VERSION)" ] || { \
	  echo "debian/changelog's top entry is $$v but src/version.h says $(KA_VERSION):" \
	       "add a changelog entry for $(KA_VERSION)" >&2; exit 1; }
	rm -rf $(DEB_WORK) $(DEB_OUT)
	mkdir -p $(DEB_WORK)/src $(DEB_OUT)
	tar -c --exclude=./$(BUILD) --exclude=./.git . | tar -x -C $(DEB_WORK)/src
	cd $(DEB_WORK)/src && DEB_BUILD_OPTIONS="noautodbgsym $$DEB_BUILD_OPTIONS" \
	  dpkg-buildpackage -b -us -uc >../build.log 2>&1 || { tail -n 40 ../build.log; exit 1; }
	mv $(DEB_WORK)/*.deb $(DEB_OUT)/
	mv $(DEB_WORK)/build.log $(BUILD)/deb-build.log
	rm -rf $(DEB_WORK)
	@ls $(DEB_OUT)

lintian: deb
	lintian --fail-on error,warning --display-info $(DEB_OUT)/*.deb

package-test: deb
	$(PYTHON) tests/package/run.py $(DEB_OUT)
