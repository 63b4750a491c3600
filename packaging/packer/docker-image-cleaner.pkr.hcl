# Bakes docker-image-cleaner into a Kubernetes node image. The package is installed and its unit
# left enabled but not started: nothing may clean the images this bake pre-pulls. The first boot
# of an instance starts it, after the node-name unit has written /etc/default/docker-image-cleaner.
#
#   packaging/build.sh
#   packer init packaging/packer && packer build -var version=0.1.0 packaging/packer
#
# The source below is an example (Debian 12 on AWS); keep the provisioners and swap the source
# for the builder and base image of your node image. See README.md beside this file.

packer {
  required_version = ">= 1.9.0"
  required_plugins {
    amazon = {
      version = ">= 1.3.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}

variable "version" {
  type        = string
  description = "Package version in dist/, e.g. 0.1.0 (the deb is <version>-1, the rpm <version>-1)."
}

variable "package_format" {
  type        = string
  default     = "deb"
  description = "deb (Debian 12+, Ubuntu 22.04+) or rpm (RHEL/Rocky/Alma 9+, Amazon Linux 2023)."
  validation {
    condition     = contains(["deb", "rpm"], var.package_format)
    error_message = "The package_format must be deb or rpm."
  }
}

variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "instance_type" {
  type    = string
  default = "t3.medium"
}

locals {
  package = var.package_format == "deb" ? "docker-image-cleaner_${var.version}-1_amd64.deb" : "docker-image-cleaner-${var.version}-1.x86_64.rpm"
  install = var.package_format == "deb" ? "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y /tmp/${local.package}" : "sudo dnf install -y /tmp/${local.package}"
}

source "amazon-ebs" "node" {
  region        = var.region
  instance_type = var.instance_type
  ssh_username  = "admin"
  ami_name      = "k8s-node-docker-image-cleaner-${var.version}-{{timestamp}}"
  source_ami_filter {
    filters = {
      name                = "debian-12-amd64-*"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["136693071363"] # Debian
    most_recent = true
  }
  # IMDSv2 only, as the node-name script expects.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
}

build {
  sources = ["source.amazon-ebs.node"]

  provisioner "file" {
    source      = "${path.root}/../../dist/${local.package}"
    destination = "/tmp/${local.package}"
  }

  provisioner "file" {
    sources     = ["${path.root}/files/docker-image-cleaner-node-name", "${path.root}/files/docker-image-cleaner-node-name.service"]
    destination = "/tmp/"
  }

  provisioner "shell" {
    inline = [
      "set -eux",
      # Install: enables docker-image-cleaner.service, does not start it.
      local.install,
      # Boot-time node name from the instance metadata, written before the cleaner starts.
      "sudo install -m 0755 /tmp/docker-image-cleaner-node-name /usr/local/sbin/docker-image-cleaner-node-name",
      "sudo install -m 0644 /tmp/docker-image-cleaner-node-name.service /etc/systemd/system/docker-image-cleaner-node-name.service",
      "sudo systemctl daemon-reload",
      "sudo systemctl enable docker-image-cleaner-node-name.service docker-image-cleaner.service",
      # The bake must end with the cleaner enabled and not running.
      "systemctl is-enabled docker-image-cleaner.service",
      "! systemctl is-active --quiet docker-image-cleaner.service",
      # Nothing of this instance may leak into the image: the state starts empty on each node.
      "sudo find /var/lib/docker-image-cleaner -mindepth 1 -delete",
      "sudo rm -f /etc/default/docker-image-cleaner",
      "rm -f /tmp/${local.package} /tmp/docker-image-cleaner-node-name /tmp/docker-image-cleaner-node-name.service",
    ]
  }
}
