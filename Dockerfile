# mailserver: docker build -t mailserver . ; see README.rst "Docker" for docker run.
FROM python:3.11-slim
WORKDIR /src
COPY . /src
RUN pip install --no-cache-dir . \
 && mkdir -p /etc/mailserver /var/lib/mailserver \
 && cp etc/mailserver.cf etc/aliases etc/header_checks etc/body_checks etc/mime_header_checks /etc/mailserver/ \
 && touch /etc/mailserver/passwd && chmod 600 /etc/mailserver/passwd
VOLUME ["/etc/mailserver", "/var/lib/mailserver"]
EXPOSE 25 587 465 110 995 143 993
CMD ["twistd", "-n", "--pidfile=", "mailserver", "--config", "/etc/mailserver/mailserver.cf"]
