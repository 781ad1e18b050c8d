# shellcheck shell=bash
# The blog's database on the compose MariaDB, beside orders' (MARIADB_DATABASE), for the same user;
# the blog creates its tables itself (yoyo migrations) at start-up. The image runs this once, when the
# mariadb-data volume is initialised; on a volume from before, run the two statements by hand.
mariadb --protocol=socket -uroot -p"$MARIADB_ROOT_PASSWORD" <<SQL
CREATE DATABASE IF NOT EXISTS blog CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin;
GRANT ALL PRIVILEGES ON blog.* TO '${MARIADB_USER:-orders}'@'%';
SQL
