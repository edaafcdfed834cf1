# scripts.mk - the operator tools: the connlimit launcher and the man
# pages connlimit(1) and libconnlimit(7).  Included by the top Makefile,
# which installs the library and connlimit-status itself.
#
# The installed launcher and man pages get LIBDIR and BINDIR written
# into them; the launcher in scripts/ stays as it is and finds the
# library built beside it.

INSTALL_EXTRA += install-tools
UNINSTALL_EXTRA += uninstall-tools

.PHONY: install-tools uninstall-tools

TOOLS_SUBST = sed -i -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@BINDIR@|$(BINDIR)|g'

install-tools:
	install -D -m 755 scripts/connlimit $(DESTDIR)$(BINDIR)/connlimit
	install -D -m 644 man/connlimit.1 $(DESTDIR)$(MANDIR)/man1/connlimit.1
	install -D -m 644 man/libconnlimit.7 \
		$(DESTDIR)$(MANDIR)/man7/libconnlimit.7
	$(TOOLS_SUBST) $(DESTDIR)$(BINDIR)/connlimit \
		$(DESTDIR)$(MANDIR)/man1/connlimit.1 \
		$(DESTDIR)$(MANDIR)/man7/libconnlimit.7

uninstall-tools:
	rm -f $(DESTDIR)$(BINDIR)/connlimit \
		$(DESTDIR)$(MANDIR)/man1/connlimit.1 \
		$(DESTDIR)$(MANDIR)/man7/libconnlimit.7
