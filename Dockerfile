# mailserver: docker build -t mailserver .   (docker run: see docs/administration.rst "Docker")
# tests/test_dockerfile.py checks these paths, the user, volumes, ports and HEALTHCHECK against
# the code and etc/mailserver.cf: change them together.

# Build the wheel apart, so the image holds no source tree (and no stray file of a checkout).
FROM python:3.11-slim AS build
WORKDIR /src
COPY setup.py README.rst ./
COPY mailserver mailserver
COPY twisted twisted
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
RUN groupadd --system mailserver \
 && useradd --system --gid mailserver --home-dir /var/lib/mailserver --shell /usr/sbin/nologin mailserver
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
 && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
# The commented samples, installed into an empty /etc/mailserver on first start.
COPY etc/aliases etc/header_checks etc/mime_header_checks etc/body_checks etc/mailserver.cf /usr/share/mailserver/etc/
COPY docker/entrypoint.sh /usr/local/bin/mailserver-entrypoint
RUN install -d -m 0755 /etc/mailserver \
 && install -d -o mailserver -g mailserver -m 0750 /var/lib/mailserver
ENV MAILSERVER_CONFIG=/etc/mailserver/mailserver.cf
VOLUME ["/etc/mailserver", "/var/lib/mailserver"]
EXPOSE 25 587 465 110 995 143 993 4190
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["mailserver", "status"]
ENTRYPOINT ["/usr/local/bin/mailserver-entrypoint"]
# twistd binds the ports as root, then runs as mailserver (--uid/--gid).
CMD ["twistd", "-n", "--pidfile=", "--uid=mailserver", "--gid=mailserver", "mailserver", "--config", "/etc/mailserver/mailserver.cf"]
